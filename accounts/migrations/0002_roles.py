"""Create the staff roles (Operators, Integrators, Auditors) with their permissions."""

from django.db import migrations

from accounts.migrations._grants import grant

ROLE_PERMISSIONS = {
    "Operators": [
        "devices.view_device",
        "devices.register_device",
        "devices.revoke_device",
        "devices.reissue_device",
        "pki.view_certificate",
        "pki.view_certificaterevocationlist",
    ],
    "Integrators": [
        "devices.view_device",
        "devices.register_device",
        "devices.revoke_device",
        "devices.reissue_device",
        "pki.view_certificate",
    ],
    "Auditors": ["devices.view_device", "pki.view_certificate", "pki.view_certificaterevocationlist"],
}


def create_roles(apps, schema_editor):
    grant(apps, ROLE_PERMISSIONS)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("devices", "0001_initial"),
        ("pki", "0002_certificate_device"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
