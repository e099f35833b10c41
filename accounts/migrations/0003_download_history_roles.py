"""Auditors and operators see the credential download history."""

from django.db import migrations

from accounts.migrations._grants import grant, revoke

GRANTS = {
    "Operators": ["devices.view_downloadlink", "devices.view_downloadattempt"],
    "Auditors": ["devices.view_downloadlink", "devices.view_downloadattempt"],
}


def grant_history(apps, schema_editor):
    grant(apps, GRANTS)


def revoke_history(apps, schema_editor):
    revoke(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_roles"),
        ("devices", "0002_downloadlink_downloadattempt"),
    ]

    operations = [migrations.RunPython(grant_history, revoke_history)]
