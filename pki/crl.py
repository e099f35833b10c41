"""The published CRL as the portal serves and reports it: read from disk and verified first."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.utils import timezone

from pki.errors import CANotInitialized, CRLInvalid, CRLNotPublished
from pki.keystore import keystore
from pki.services import crl_path


@dataclass(frozen=True)
class PublishedCRL:
    """The CRL file's exact bytes and the CRL they hold, verified by read_published_crl."""

    pem: bytes
    der: bytes
    crl: x509.CertificateRevocationList
    number: int


#: The last CRL this process verified, keyed by the SHA-256 of its bytes and of the CA certificate:
#: parsing and verifying a CRL of a large fleet costs some thirty times more than hashing it
#: (docs/benchmarks.md). Any change to either file, one flipped character, misses the cache and
#: is verified again in full; nextUpdate is checked on every read.
_last_verified: tuple[bytes, PublishedCRL] | None = None


def read_published_crl(now: dt.datetime | None = None) -> PublishedCRL:
    """The CRL on disk, verified against the CA certificate before anyone is told it is good.

    Everything that serves the CRL (/ca.crl, /crl.pem) or reports on it (/health, the dashboard)
    reads it here, so a file damaged or tampered with after publication (one flipped base64
    character) is refused everywhere alike: it must parse, carry a CRL number, name the CA as
    issuer and be signed by the CA's key (RFC 5280 6.3.3 (f), (g)), and have a future nextUpdate.
    Only the CA certificate is read, never the CA key: hosts that only serve can verify.
    """
    global _last_verified
    try:
        issuer_pem = keystore().certificate_path.read_bytes()
        issuer = x509.load_pem_x509_certificate(issuer_pem)
    except FileNotFoundError:
        raise CANotInitialized("The certificate authority has not been created.") from None
    except (OSError, ValueError):
        raise CRLInvalid("The CA certificate cannot be read, so the CRL cannot be verified.") from None
    try:
        pem = crl_path().read_bytes()
    except FileNotFoundError:
        raise CRLNotPublished("No CRL has been published yet (an operator runs init_ca).") from None
    except OSError as exc:
        raise CRLInvalid(f"The CRL file cannot be read ({exc.strerror}).") from None
    key = hashlib.sha256(pem).digest() + hashlib.sha256(issuer_pem).digest()
    cached = _last_verified
    if cached is not None and cached[0] == key:
        published = cached[1]
    else:
        published = _verify(pem, issuer)
        _last_verified = (key, published)
    next_update = published.crl.next_update_utc
    if next_update is None or next_update <= (now or timezone.now()):
        raise CRLInvalid("The CRL's nextUpdate has passed: brokers and devices will refuse it.")
    return published


def _verify(pem: bytes, issuer: x509.Certificate) -> PublishedCRL:
    try:
        crl = x509.load_pem_x509_crl(pem)
        number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        public_key = issuer.public_key()
        signed = (
            isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
            and crl.issuer == issuer.subject
            and crl.is_signature_valid(public_key)
        )
    except (ValueError, x509.ExtensionNotFound):
        raise CRLInvalid("The CRL file is not a valid CRL: it is damaged or was tampered with.") from None
    if not signed:
        raise CRLInvalid(
            "The CRL's signature does not verify with the CA certificate: it is damaged or was tampered with."
        )
    return PublishedCRL(pem=pem, der=crl.public_bytes(serialization.Encoding.DER), crl=crl, number=number)
