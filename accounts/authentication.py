"""`Authorization: Token <token>` for integrators, checked against stored digests."""

from __future__ import annotations

import hmac
import math
import time
from typing import Any

from auditlog.context import auditlog_value
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.models import ApiToken, token_digest
from kernel.addresses import client_address

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


class FailedTokenThrottle:
    """Failed token authentications per client address (by the trusted-proxy rule), counted in
    the shared cache so every worker process sees the same count.

    A fixed window: the first failure opens it for API_TOKEN_FAILURE_WINDOW_SECONDS; past
    API_TOKEN_FAILURE_LIMIT failures in it, that address gets 429 for every token, valid ones
    included (answering a valid token differently would tell the guesser which guess was
    right), until the window ends. Refused requests are not counted, so a flood that goes on
    cannot extend the block: a valid token from a shared address waits one window at most.
    """

    scope = "api-token-failures"

    def __init__(self, request: Request) -> None:
        address = client_address(request) or "unknown"
        self.count_key = f"{self.scope}:count:{address}"
        self.start_key = f"{self.scope}:start:{address}"

    def refuse_if_blocked(self) -> None:
        if int(cache.get(self.count_key, 0)) < settings.API_TOKEN_FAILURE_LIMIT:
            return
        started = float(cache.get(self.start_key, time.time()))
        wait = max(1, math.ceil(started + settings.API_TOKEN_FAILURE_WINDOW_SECONDS - time.time()))
        raise exceptions.Throttled(
            wait,
            detail="Too many failed API token attempts from this address; the API refuses tokens"
            " from it for a while.",
        )

    def record_failure(self) -> None:
        window = settings.API_TOKEN_FAILURE_WINDOW_SECONDS
        # add() opens the window only if none is open; incr() is atomic in Redis and keeps the
        # key's expiry, so the window closes on time however many failures it holds.
        cache.add(self.start_key, time.time(), timeout=window)
        if not cache.add(self.count_key, 1, timeout=window):
            try:
                cache.incr(self.count_key)
            except ValueError:  # the window closed between add() and incr()
                cache.add(self.count_key, 1, timeout=window)


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        throttle = FailedTokenThrottle(request)
        throttle.refuse_if_blocked()
        try:
            return self._check(header)
        except exceptions.AuthenticationFailed:
            throttle.record_failure()
            raise

    def _check(self, header: list[bytes]) -> tuple[Any, ApiToken]:
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
        # Read from the database on every request (no cache): a revoked token fails at once.
        if token.is_revoked:
            raise exceptions.AuthenticationFailed("The API token was revoked; ask for a new one.")
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
