from __future__ import annotations

from typing import Any

from django import template

from portal.access import is_verified, may_use_portal

register = template.Library()


@register.filter
def portal_user(user: Any) -> bool:
    """Signed in with the second factor, in a role that works in the portal. Pages rendered
    outside a request (the download refusal) have no user: False."""
    if not getattr(user, "is_authenticated", False):
        return False
    return is_verified(user) and may_use_portal(user)


@register.filter
def get_item(mapping: dict[str, Any], key: str) -> Any:
    return mapping.get(key)
