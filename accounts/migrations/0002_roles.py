"""Create the staff roles (Operators, Integrators, Auditors) with their permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

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
    # Permissions are normally created after all migrations; the roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        for name in names:
            app_label, codename = name.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


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
