"""Shared by the role migrations (the loader skips modules whose name starts with "_")."""

from typing import Any


def _permissions(apps: Any, names: list[str]) -> list[Any]:
    permission_model = apps.get_model("auth", "Permission")
    found = []
    for name in names:
        app_label, codename = name.split(".")
        found.append(permission_model.objects.get(content_type__app_label=app_label, codename=codename))
    return found


def grant(apps: Any, grants: dict[str, list[str]]) -> None:
    """Give each group (created if missing) its permissions."""
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; the roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    group_model = apps.get_model("auth", "Group")
    for role, names in grants.items():
        group, _ = group_model.objects.get_or_create(name=role)
        group.permissions.add(*_permissions(apps, names))


def revoke(apps: Any, grants: dict[str, list[str]]) -> None:
    group_model = apps.get_model("auth", "Group")
    for role, names in grants.items():
        group = group_model.objects.filter(name=role).first()
        if group is not None:
            group.permissions.remove(*_permissions(apps, names))
