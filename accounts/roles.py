"""The three staff roles, as Django groups, and what each may do: the one place that decides,
for the portal, the admin and the API alike.

Operators and integrators may register, revoke and re-issue; auditors only read. Integrators
are API-only: the browser interfaces (the portal's pages and the admin) refuse them, whatever
their is_staff flag says (their work is scripted, with a token). Superusers may do everything.
"""

from __future__ import annotations

from typing import Any

OPERATORS = "Operators"
INTEGRATORS = "Integrators"
AUDITORS = "Auditors"

VIEW = "devices.view_device"
REGISTER = "devices.register_device"
REVOKE = "devices.revoke_device"
REISSUE = "devices.reissue_device"
# Enrolment groups (manufacturer CAs): operators and integrators manage them, auditors read.
VIEW_ENROLLMENT_GROUPS = "enrollment.view_enrollmentgroup"
ADD_ENROLLMENT_GROUPS = "enrollment.add_enrollmentgroup"
CHANGE_ENROLLMENT_GROUPS = "enrollment.change_enrollmentgroup"
DELETE_ENROLLMENT_GROUPS = "enrollment.delete_enrollmentgroup"

#: The roles that work in a browser (portal and admin).
BROWSER_ROLES = (OPERATORS, AUDITORS)


def may_use_browser(user: Any) -> bool:
    """The portal and the admin: superusers, and active users in a browser role who may view
    devices. Integrators are API-only."""
    if not user.is_active:
        return False
    if user.is_superuser:
        return True
    return bool(user.groups.filter(name__in=BROWSER_ROLES).exists() and user.has_perm(VIEW))


def may_in_browser(user: Any, permission: str) -> bool:
    """May `user` do what `permission` allows from the portal or the admin?"""
    return may_use_browser(user) and bool(user.has_perm(permission))


def may_in_api(user: Any, permission: str) -> bool:
    """May `user` do what `permission` allows through the API (any role, integrators included)?"""
    return bool(user and user.is_authenticated and user.is_active and user.has_perm(permission))
