"""Who may see the portal, and do what in it: one place, used by every portal view.

A portal page needs a signed-in user who gave the second factor (django-otp verified) and
holds a role that works in the browser: Operators, Auditors or a superuser. Integrators are
API-only. Actions need the role's permission on top (accounts.roles).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from accounts import roles

View = TypeVar("View", bound=Callable[..., HttpResponse])

PORTAL_ROLES = roles.BROWSER_ROLES


def is_verified(user: Any) -> bool:
    check = getattr(user, "is_verified", None)
    return bool(user.is_authenticated and check is not None and check())


def may_use_portal(user: Any) -> bool:
    """Superusers, and users in a portal role who may view devices. Integrators are API-only."""
    return roles.may_use_browser(user)


def portal_view(permission: str | None = None) -> Callable[[View], View]:
    """Guard a portal view: verified sign-in, a portal role, and `permission` when given.

    Anonymous users and password-only sessions are sent to the portal's sign-in page (which
    asks for what is missing); a signed-in user without the right role gets a 403 page.
    """

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not is_verified(user):
                return redirect_to_login(request.get_full_path())
            if not may_use_portal(user):
                raise PermissionDenied("The portal is for operators and auditors; integrators use the API.")
            if permission is not None and not roles.may_in_browser(user, permission):
                raise PermissionDenied("Your role does not allow this action.")
            return view(request, *args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


def can(user: Any, permission: str) -> bool:
    return roles.may_in_browser(user, permission)
