"""RFC 7030 4.2.1 `simpleenroll`: a device's first certificate, over HTTP.

Two ways to authenticate (RFC 7030 3.2.3, 3.3.2):
- HTTP Basic, username = the device id, password = its one-time enrolment code (a device
  registered with `"delivery": "est"`);
- zero-touch: the TLS client certificate the device presented to nginx (proxy.client_cert,
  believed only with the proxy's secret), a factory certificate that the portal verifies against
  its enrolment groups' CAs (enrollment.services.match_enrollment_group), not nginx.

The body is the device's PKCS#10 request, base64-encoded DER (RFC 7030 4.2.1; line breaks
allowed). The answer is the certificate as a certs-only PKCS#7, base64-encoded (4.2.3), signed in
the request: a CSR signature is cheap, and the CA key is on the web processes today.
"""

from __future__ import annotations

import base64
import binascii

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from enrollment.enroll import Enrolled, enroll_with_code, enroll_with_factory_certificate
from enrollment.errors import EnrollmentLocked
from est.requests import csr_from_body, require_pkcs10
from est.responses import est_error, issued_certificate_response
from kernel.addresses import client_address
from kernel.errors import ServiceError
from proxy.client_cert import presented_client_certificate

# RFC 7030 3.2.3: a client that sent no (or wrong) credentials is told how to authenticate.
CHALLENGE = {"WWW-Authenticate": 'Basic realm="est"'}


class NotAuthenticated(ServiceError):
    code = "not_authenticated"
    status = 401


def _basic_credentials(request: HttpRequest) -> tuple[str, str] | None:
    """(device id, enrolment code) from an `Authorization: Basic` header, or None without one."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise NotAuthenticated("The Basic credentials are not base64 of 'device-id:code'.") from None
    username, separator, password = decoded.partition(":")
    if not separator:
        raise NotAuthenticated("The Basic credentials are not base64 of 'device-id:code'.")
    return username, password


def _enroll(request: HttpRequest) -> Enrolled:
    require_pkcs10(request)
    address = client_address(request)
    credentials = _basic_credentials(request)
    if credentials is not None:
        device_id, code = credentials
        # The CSR is checked first: a bad one is refused before the code is looked at, so it
        # neither spends one of the device's attempts nor says anything about the code.
        csr = csr_from_body(request.body)
        return enroll_with_code(device_id, code, csr, address=address)
    factory_certificate = presented_client_certificate(request)
    if factory_certificate is None:
        raise NotAuthenticated(
            "Authenticate with HTTP Basic (device id and enrolment code) or a factory certificate."
        )
    csr = csr_from_body(request.body)
    return enroll_with_factory_certificate(factory_certificate, csr, address=address)


def _refusal(request: HttpRequest, error: ServiceError) -> HttpResponse:
    headers: dict[str, str] = {}
    if error.status == 401:
        headers.update(CHALLENGE)
    if isinstance(error, EnrollmentLocked):
        headers["Retry-After"] = str(error.details.get("retry_after", 60))
    return est_error(request, error.status, error.code, error.message, headers)


@csrf_exempt  # a device, not a browser: no session, no cookie to ride on
@require_POST
def simpleenroll(request: HttpRequest) -> HttpResponse:
    try:
        enrolled = _enroll(request)
    except ServiceError as error:
        return _refusal(request, error)
    return issued_certificate_response(enrolled.issued.certificate)
