"""EST answers: the RFC's media types and base64 bodies, and errors in the portal's JSON body for
clients that accept JSON (text for the others, as RFC 7030 4.2.3 leaves it to the server)."""

from __future__ import annotations

from cryptography import x509
from django.http import HttpRequest, HttpResponse, JsonResponse

from api.errors import error_body
from pki.pkcs7 import CERTS_ONLY_CONTENT_TYPE, base64_body, certs_only_der


def base64_response(der: bytes, content_type: str) -> HttpResponse:
    """RFC 7030 4.1.3, 4.5.2: the DER body sent base64-encoded, and said so."""
    response = HttpResponse(base64_body(der), content_type=content_type)
    response["Content-Transfer-Encoding"] = "base64"
    return response


def certs_only_response(der: bytes) -> HttpResponse:
    return base64_response(der, CERTS_ONLY_CONTENT_TYPE)


def issued_certificate_response(certificate: x509.Certificate) -> HttpResponse:
    """RFC 7030 4.2.3: a certificate just issued, as a certs-only PKCS#7; never cached."""
    response = certs_only_response(certs_only_der([certificate]))
    response["Cache-Control"] = "no-store"
    return response


def _accepts_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def est_error(
    request: HttpRequest,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **details: str,
) -> HttpResponse:
    """An EST error: the portal's JSON error body when the client accepts JSON, else the message
    as text; never cached."""
    response: HttpResponse
    if _accepts_json(request):
        response = JsonResponse(error_body(code, message, None, **details), status=status)
    else:
        response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response[name] = value
    return response
