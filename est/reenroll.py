"""EST simplereenroll (RFC 7030 4.2.2): a device renews its certificate with its current one.

The only credential is the TLS client certificate nginx verified (proxy.client_cert): no HTTP
authentication is offered, so a request without one is told, as RFC 7030 3.2.3 and RFC 9110
11.6.1 want, with a 401 and `WWW-Authenticate`. The chain is nginx's check; whether the
certificate is still a device's current one is the portal's (devices.renewal).
"""

from __future__ import annotations

from cryptography import x509
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from devices.errors import RenewalRefused
from devices.renewal import authorize_renewal, refuse_unknown, renew_device
from est.requests import UnsupportedMediaType, csr_from_body, require_pkcs10
from est.responses import est_error, issued_certificate_response
from kernel.addresses import client_address
from pki.errors import PKIError
from proxy.client_cert import verified_client_certificate

# RFC 7030 3.2.3: the client certificate is the credential; there is no HTTP scheme to offer,
# so the challenge names TLS client authentication in words a person reading it understands.
CHALLENGE = 'Certificate realm="EST simplereenroll: present the device certificate over TLS"'


@csrf_exempt  # no cookies: the TLS client certificate is the only credential
@require_POST
def simplereenroll(request: HttpRequest) -> HttpResponse:
    address = client_address(request)
    presented: x509.Certificate | None = verified_client_certificate(request)
    if presented is None:
        refuse_unknown(None, address=address, reason="client_certificate_required")
        return est_error(
            request, 401, "client_certificate_required",
            "Renewal needs the device's current certificate as the TLS client certificate.",
            headers={"WWW-Authenticate": CHALLENGE},
        )  # fmt: skip
    try:
        require_pkcs10(request)
    except UnsupportedMediaType as error:
        return est_error(request, error.status, error.code, error.message)
    try:
        # Who it is first: a refused device learns nothing about its CSR.
        renewal = renew_device(
            authorize_renewal(presented, address=address), csr_from_body(request.body), address=address
        )
    except RenewalRefused as refusal:
        headers = {"WWW-Authenticate": CHALLENGE} if refusal.status == 401 else None
        return est_error(request, refusal.status, refusal.code, refusal.message, headers, **refusal.details)
    except PKIError as error:  # a CSR the policy refuses (400), a certificate lint failed, the CA unusable
        return est_error(request, error.status, error.code, error.message)
    return issued_certificate_response(renewal.issued.certificate)
