"""`Authorization: Token <token>` for integrators, checked against stored digests."""

from __future__ import annotations

import hmac
from typing import Any

from auditlog.context import auditlog_value
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.models import ApiToken, token_digest

# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
LAST_USED_RESOLUTION_SECONDS = 60


def name_history_actor(user: Any) -> None:
    """Make `user` the actor of this request's model-change history (django-auditlog).

    auditlog's middleware takes the actor from request.user before the view runs; a token is
    only checked later, by DRF, so a revoke through the API was recorded "by the system". The
    middleware's context for this request (auditlog 3.4: the dict in `auditlog_value`, read when
    each LogEntry is saved) gets the token's user; its address and port stay as they are.
    `auditlog.context.set_actor` is not used: it replaces that context without restoring it,
    which leaves the middleware's own signal receiver connected after every request.
    """
    context = auditlog_value.get(None)
    if context is not None and context.get("actor") is None:
        context["actor"] = user


class VerifiedSessionAuthentication(authentication.SessionAuthentication):
    """The portal's session, only once the second factor was given (django-otp verified)."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        is_verified = getattr(user, "is_verified", None)
        if is_verified is None or not is_verified():
            return None
        return result


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header must be 'Token <token>'.")
        try:
            value = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token contains invalid characters.") from None
        digest = token_digest(value)
        token = ApiToken.objects.select_related("user").filter(digest=digest).first()
        # The lookup is by digest; the constant-time comparison guards against any index timing.
        if token is None or not hmac.compare_digest(token.digest, digest):
            raise exceptions.AuthenticationFailed("The API token is not valid.")
        if token.is_expired:
            raise exceptions.AuthenticationFailed("The API token has expired; ask for a new one.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The API token's user is deactivated.")
        now = timezone.now()
        if (
            token.last_used_at is None
            or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS
        ):
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        name_history_actor(token.user)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
