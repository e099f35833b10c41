"""Role checks for the API, in one place: each view action names the permission it needs."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts import roles


class ActionPermission(BasePermission):
    """Allows an action when the user holds `view.action_permissions[action]`.

    An action missing from the map is refused: a new endpoint is closed until someone decides
    who may use it.
    """

    message = "Your role does not allow this action."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        action = getattr(view, "action", None)
        if action is None:
            # A viewset method the route does not map: DRF answers 405 next. Any other view
            # without an action is refused.
            return getattr(view, "action_map", None) is not None
        required: str | None = getattr(view, "action_permissions", {}).get(action)
        return required is not None and roles.may_in_api(user, required)
