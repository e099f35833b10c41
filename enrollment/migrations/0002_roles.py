"""Operators and integrators manage enrolment groups; auditors see them."""

from django.db import migrations

from accounts.migrations._grants import grant, revoke

MANAGE = [
    "enrollment.view_enrollmentgroup",
    "enrollment.add_enrollmentgroup",
    "enrollment.change_enrollmentgroup",
    "enrollment.delete_enrollmentgroup",
    "enrollment.view_enrollmentcode",
]
GRANTS = {
    "Operators": MANAGE,
    "Integrators": MANAGE,
    "Auditors": ["enrollment.view_enrollmentgroup", "enrollment.view_enrollmentcode"],
}


def grant_enrollment(apps, schema_editor):
    grant(apps, GRANTS)


def revoke_enrollment(apps, schema_editor):
    revoke(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0008_token_roles"),
        ("enrollment", "0001_initial"),
    ]

    operations = [migrations.RunPython(grant_enrollment, revoke_enrollment)]
