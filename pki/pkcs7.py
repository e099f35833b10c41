"""Certs-only PKCS#7 and the base64 transfer encoding EST answers with (pure: values in, bytes out).

RFC 7030 4.1.3 and 4.2.3: `cacerts`, `simpleenroll` and `simplereenroll` answer a "certs-only"
CMC Simple PKI Response (RFC 5272 4.1), which is a degenerate PKCS#7 SignedData (RFC 5652 5.1:
no content, no signers, only certificates), DER-encoded and sent base64-encoded
(`Content-Transfer-Encoding: base64`, RFC 2045 6.8).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

# RFC 7030 4.1.3 / RFC 5751 3.2.2: the media type of a certs-only answer.
CERTS_ONLY_CONTENT_TYPE = "application/pkcs7-mime; smime-type=certs-only"


def certs_only_der(certificates: Sequence[x509.Certificate]) -> bytes:
    """A certs-only PKCS#7 (degenerate SignedData) holding `certificates`, DER-encoded."""
    if not certificates:
        raise ValueError("A certs-only PKCS#7 needs at least one certificate.")
    return pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)


def base64_body(der: bytes) -> bytes:
    """Base64 in lines of 76 characters (RFC 2045 6.8), as `base64 -d` and EST clients read it."""
    return base64.encodebytes(der)


def certs_only_base64(certificates: Sequence[x509.Certificate]) -> bytes:
    """The body of an EST certs-only answer: the DER PKCS#7, base64-encoded."""
    return base64_body(certs_only_der(certificates))
