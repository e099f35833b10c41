"""Teach drf-spectacular how API tokens are sent, so the schema documents the security scheme."""

from __future__ import annotations

from typing import Any

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "accounts.authentication.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <token>`, from `python manage.py create_api_token USERNAME`",
        }


class VerifiedSessionScheme(SessionScheme):  # type: ignore[no-untyped-call]
    """The portal's session cookie (valid for the API once the second factor was given)."""

    target_class = "accounts.authentication.VerifiedSessionAuthentication"
    priority = 0
