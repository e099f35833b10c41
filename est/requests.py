"""What an EST enrolment or renewal request carries: a PKCS#10 CSR, base64-encoded DER
(RFC 7030 4.2.1, line breaks allowed), under its own media type."""

from __future__ import annotations

import base64
import binascii

from django.http import HttpRequest

from kernel.errors import ServiceError
from pki.csr import MAX_CSR_BYTES, ParsedCSR, parse_csr
from pki.errors import InvalidCSR

PKCS10_CONTENT_TYPE = "application/pkcs10"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"
    status = 415


def require_pkcs10(request: HttpRequest) -> None:
    """RFC 7030 4.2.1: the body is an `application/pkcs10` request, or 415."""
    if (request.content_type or "").lower() != PKCS10_CONTENT_TYPE:
        raise UnsupportedMediaType(f"Send the CSR as {PKCS10_CONTENT_TYPE} (base64-encoded DER).")


def csr_from_body(body: bytes) -> ParsedCSR:
    """The base64-encoded DER PKCS#10 of the body, checked by the portal's CSR policy."""
    if len(body) > 2 * MAX_CSR_BYTES:
        raise InvalidCSR(f"The request is {len(body)} bytes; a device CSR is at most {MAX_CSR_BYTES} bytes.")
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCSR("The body is not base64: send the DER PKCS#10 request base64-encoded.") from None
    lines = base64.encodebytes(der).decode("ascii")
    return parse_csr(f"-----BEGIN CERTIFICATE REQUEST-----\n{lines}-----END CERTIFICATE REQUEST-----\n")
