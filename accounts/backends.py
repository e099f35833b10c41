"""Django's model permissions, read in one query instead of two.

`ModelBackend` reads a user's own permissions and their groups' permissions with a query each,
then caches the union on the user object for the rest of the request. Every API request checks
one permission for a role user, so both queries ran on every call. This backend reads the
union in one query into the same cache; everything else (authentication, per-source
permission sets, the async variants) is ModelBackend's own.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db.models import Q


class ModelPermissionBackend(ModelBackend):
    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            granted = Permission.objects.all()
            if not user_obj.is_superuser:
                granted = granted.filter(Q(user=user_obj) | Q(group__user=user_obj))
            rows = granted.values_list("content_type__app_label", "codename").order_by().distinct()
            user_obj._perm_cache = {f"{app_label}.{codename}" for app_label, codename in rows}
        return user_obj._perm_cache  # type: ignore[no-any-return]
