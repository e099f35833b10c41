"""The client certificate nginx passed on, as Django sees it, believed only from the proxy.

nginx (proxy.nginx) sets three headers on every request it passes on: the certificate (PEM,
URL-encoded), its verdict, and the shared secret PROXY_SECRET. A request that reaches gunicorn
some other way (straight to its port) may carry headers of the same names, but not the secret,
so it is treated as a request without a certificate.
"""

from __future__ import annotations

import hmac
from urllib.parse import unquote

from cryptography import x509
from django.conf import settings
from django.http import HttpRequest

from proxy.nginx import CLIENT_CERT_HEADER, CLIENT_VERIFY_HEADER, PROXY_SECRET_HEADER


def _meta_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def from_proxy(request: HttpRequest) -> bool:
    """Whether the request carries the proxy's secret (never true while PROXY_SECRET is unset)."""
    expected: str = settings.PROXY_SECRET
    presented = request.META.get(_meta_key(PROXY_SECRET_HEADER), "")
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def verified_client_certificate(request: HttpRequest) -> x509.Certificate | None:
    """The TLS client certificate nginx verified against the portal's CA, or None: no
    certificate, verification failed, unreadable, or the request did not come through the proxy.

    That a certificate chains to the portal's CA is all this says: whether it is still good for
    anything (issued to an active device, not revoked) is for the caller to check.
    """
    if request.META.get(_meta_key(CLIENT_VERIFY_HEADER)) != "SUCCESS":
        return None
    return presented_client_certificate(request)


def presented_client_certificate(request: HttpRequest) -> x509.Certificate | None:
    """The TLS client certificate the client presented through the proxy, whether or not it
    chains to the portal's CA, or None (no certificate, unreadable, not through the proxy).

    nginx checked only that the client holds its private key (the TLS handshake): a caller
    must verify the certificate itself, as EST zero-touch enrolment does against the enrolment
    groups' CAs (enrollment.services.match_enrollment_group).
    """
    if not from_proxy(request):
        return None
    escaped = request.META.get(_meta_key(CLIENT_CERT_HEADER), "")
    if not escaped:
        return None
    try:
        return x509.load_pem_x509_certificate(unquote(escaped).encode())
    except ValueError:
        return None
