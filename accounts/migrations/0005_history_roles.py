"""Auditors and operators read the model-change history, the broker rules and sync records, and
the expiry alerts; only superusers edit ACL rules."""

from django.db import migrations

from accounts.migrations._grants import grant, revoke

HISTORY = [
    "auditlog.view_logentry",
    "broker.view_aclrule",
    "broker.view_brokersync",
    "pki.view_expiryalert",
]
GRANTS = {"Operators": HISTORY, "Auditors": HISTORY}


def grant_history(apps, schema_editor):
    grant(apps, GRANTS)


def revoke_history(apps, schema_editor):
    revoke(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_audit_roles"),
        ("auditlog", "0017_add_actor_email"),
        ("broker", "0001_initial"),
        ("pki", "0003_expiryalert"),
    ]

    operations = [migrations.RunPython(grant_history, revoke_history)]
