"""The client's address, the one way for throttles, lockouts and the audit trail.

X-Forwarded-For is trusted only as far as TRUSTED_PROXY_COUNT proxies put it there (the same
rule DRF's throttles apply); otherwise anyone could choose their own address per request.
Kept free of DRF imports: django-axes calls it early in a sign-in.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str | None:
    remote = request.META.get("REMOTE_ADDR")
    proxies: int = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        return str(hops[-min(proxies, len(hops))])
    return str(remote) if remote else None
