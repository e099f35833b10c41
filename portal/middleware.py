"""Session timeouts, and the actor and address for the model-change history."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from auditlog.middleware import AuditlogMiddleware
from django.conf import settings
from django.contrib import auth, messages
from django.http import HttpRequest, HttpResponse

from kernel.addresses import client_address

SIGNED_IN_AT = "portal_signed_in_at"
LAST_SEEN_AT = "portal_last_seen_at"
TIMED_OUT = "portal_timed_out"
# Writing the session on every request would turn every page view into a database write;
# the idle clock is precise to this many seconds instead.
ACTIVITY_RESOLUTION_SECONDS = 30


def mark_activity(request: HttpRequest, now: float) -> None:
    request.session[LAST_SEEN_AT] = now


def expired_reason(session: Any, now: float) -> str | None:
    """Why a signed-in session is over (idle or absolute limit), or None while it is valid."""
    signed_in_at = session.get(SIGNED_IN_AT)
    last_seen_at = session.get(LAST_SEEN_AT, signed_in_at)
    if signed_in_at is None or last_seen_at is None:
        # A session from before the clock existed (or forged without it): treat as expired.
        return "Your session has expired. Please sign in again."
    if now - float(signed_in_at) > settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS:
        hours = settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS / 3600
        return f"You were signed out: sessions last at most {hours:g} hours. Please sign in again."
    if now - float(last_seen_at) > settings.SESSION_IDLE_TIMEOUT_SECONDS:
        minutes = settings.SESSION_IDLE_TIMEOUT_SECONDS / 60
        return f"You were signed out after {minutes:g} minutes without activity. Please sign in again."
    return None


class SessionTimeoutMiddleware:
    """Signs out a session that was idle too long or is older than the absolute limit.

    Only session sign-ins are concerned: API tokens carry no session. The user is signed out
    before the view runs, so the view sees an anonymous user and answers as it would to one
    (the portal's login page, the admin's, or the API's 403).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is not None and auth.SESSION_KEY in session:
            now = time.time()
            reason = expired_reason(session, now)
            if reason is not None:
                auth.logout(request)  # flushes the session and gives it a new key
                request.session[TIMED_OUT] = reason
            elif now - float(session.get(LAST_SEEN_AT, 0)) >= ACTIVITY_RESOLUTION_SECONDS:
                mark_activity(request, now)
        return self.get_response(request)


def pop_timeout_notice(request: HttpRequest) -> None:
    """Turn a timeout recorded by the middleware into a message on the login page."""
    reason = request.session.pop(TIMED_OUT, None)
    if reason:
        messages.info(request, reason)


class AuditlogActorMiddleware(AuditlogMiddleware):  # type: ignore[misc]
    """django-auditlog's middleware, but the address is the one the audit trail and the
    lockout use: X-Forwarded-For only from trusted proxies (auditlog's own trusts any client)."""

    @staticmethod
    def _get_remote_addr(request: HttpRequest) -> str | None:
        if getattr(settings, "AUDITLOG_DISABLE_REMOTE_ADDR", False):
            return None
        return client_address(request)
