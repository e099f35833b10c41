"""Auditors and operators also see the broker changes still waiting for a sync."""

from django.db import migrations

from accounts.migrations._grants import grant, revoke

GRANTS = {"Operators": ["broker.view_pendingchange"], "Auditors": ["broker.view_pendingchange"]}


def grant_pending(apps, schema_editor):
    grant(apps, GRANTS)


def revoke_pending(apps, schema_editor):
    revoke(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_history_roles"),
        ("broker", "0003_pendingchange"),
    ]

    operations = [migrations.RunPython(grant_pending, revoke_pending)]
