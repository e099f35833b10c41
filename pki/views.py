"""Public PKI material: the CA certificate and the current CRL, for devices, brokers and tools."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from pki.crl import read_published_crl
from pki.errors import CANotInitialized, PKIError
from pki.keystore import keystore

# Brokers and devices poll the CRL; a short cache keeps them close to the newest one.
CRL_CACHE_SECONDS = 60


def _unavailable(error: PKIError) -> HttpResponse:
    """503 with the error's code: a CRL that is missing or fails verification is never served."""
    response = JsonResponse({"error": {"code": error.code, "message": error.message}}, status=503)
    response["Cache-Control"] = "no-store"
    return response


def _crl_response(der: bool) -> HttpResponse:
    try:
        published = read_published_crl()
    except PKIError as error:
        return _unavailable(error)
    if der:
        # RFC 5280 4.2.1.13 and RFC 2585: a CRL distribution point over HTTP serves DER.
        response = HttpResponse(published.der, content_type="application/pkix-crl")
    else:
        response = HttpResponse(published.pem, content_type="application/x-pem-file")
    response["Cache-Control"] = f"public, max-age={CRL_CACHE_SECONDS}"
    return response


@require_safe
def crl_pem(request: HttpRequest) -> HttpResponse:
    return _crl_response(der=False)


@require_safe
def crl_der(request: HttpRequest) -> HttpResponse:
    return _crl_response(der=True)


@require_safe
def ca_certificate(request: HttpRequest) -> HttpResponse:
    try:
        pem = keystore().certificate_path.read_bytes()
    except FileNotFoundError:
        return _unavailable(CANotInitialized("The certificate authority has not been created yet."))
    return HttpResponse(pem, content_type="application/x-pem-file")
