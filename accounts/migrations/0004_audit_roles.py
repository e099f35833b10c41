"""Auditors and operators read the audit trail."""

from django.db import migrations

from accounts.migrations._grants import grant, revoke

GRANTS = {
    "Operators": ["audit.view_auditevent"],
    "Auditors": ["audit.view_auditevent"],
}


def grant_audit(apps, schema_editor):
    grant(apps, GRANTS)


def revoke_audit(apps, schema_editor):
    revoke(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_download_history_roles"),
        ("audit", "0001_initial"),
    ]

    operations = [migrations.RunPython(grant_audit, revoke_audit)]
