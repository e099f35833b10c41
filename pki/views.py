"""Public PKI material: the CA certificate and the current CRL, for devices, brokers and tools."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from pki.keystore import keystore
from pki.services import crl_path

# Brokers and devices poll the CRL; a short cache keeps them close to the newest one.
CRL_CACHE_SECONDS = 60


def _unavailable(what: str) -> HttpResponse:
    return HttpResponse(
        f"The {what} is not available yet: the certificate authority has not been created.\n",
        status=503,
        content_type="text/plain; charset=utf-8",
    )


def _read_crl_pem() -> bytes | None:
    try:
        return crl_path().read_bytes()
    except FileNotFoundError:
        return None


def _crl_response(der: bool) -> HttpResponse:
    pem = _read_crl_pem()
    if pem is None:
        return _unavailable("CRL")
    if der:
        # RFC 5280 4.2.1.13 and RFC 2585: a CRL distribution point over HTTP serves DER.
        response = HttpResponse(
            x509.load_pem_x509_crl(pem).public_bytes(serialization.Encoding.DER),
            content_type="application/pkix-crl",
        )
    else:
        response = HttpResponse(pem, content_type="application/x-pem-file")
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
        return _unavailable("CA certificate")
    return HttpResponse(pem, content_type="application/x-pem-file")
