"""EST (RFC 7030) operations that need no authentication: the CA certificates and the CSR policy.

RFC 7030 4.1.1 and 4.5.1: a server may answer `cacerts` and `csrattrs` to anyone; a device reads
them before it enrols. Neither needs the CA key, so any web process can answer them.
"""

from __future__ import annotations

from cryptography import x509
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from est.responses import base64_response, certs_only_response, est_error
from pki.csrattrs import CSR_ATTRIBUTES_CONTENT_TYPE, allowed_csr_attributes
from pki.keystore import keystore
from pki.pkcs7 import certs_only_der

# Devices fetch these at every start; they change only when the CA does.
CACHE_SECONDS = 300


@require_safe
def cacerts(request: HttpRequest) -> HttpResponse:
    """RFC 7030 4.1.3: the CA certificate as a certs-only PKCS#7, base64-encoded DER."""
    try:
        pem = keystore().certificate_path.read_bytes()
    except FileNotFoundError:
        return est_error(
            request, 503, "ca_not_initialized", "The certificate authority has not been created yet."
        )
    response = certs_only_response(certs_only_der(x509.load_pem_x509_certificates(pem)))
    response["Cache-Control"] = f"public, max-age={CACHE_SECONDS}"
    return response


@require_safe
def csrattrs(request: HttpRequest) -> HttpResponse:
    """RFC 7030 4.5.2: the key types and signature algorithms a CSR may use, as base64 DER CsrAttrs."""
    response = base64_response(allowed_csr_attributes(), CSR_ATTRIBUTES_CONTENT_TYPE)
    response["Cache-Control"] = f"public, max-age={CACHE_SECONDS}"
    return response
