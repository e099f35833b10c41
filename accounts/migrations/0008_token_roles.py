"""Operators see and revoke API tokens (a leaked one must be cut off without waiting for a
superuser); auditors see them. Nobody sees a token's secret or digest."""

from django.db import migrations

from accounts.migrations._grants import grant, revoke

GRANTS = {
    "Operators": ["accounts.view_apitoken", "accounts.revoke_apitoken"],
    "Auditors": ["accounts.view_apitoken"],
}


def grant_tokens(apps, schema_editor):
    grant(apps, GRANTS)


def revoke_tokens(apps, schema_editor):
    revoke(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0007_token_revocation"),
    ]

    operations = [migrations.RunPython(grant_tokens, revoke_tokens)]
