"""Issuance: lint and sign a certificate with the CA, then record it with a serial of its own.

Workflows sign before their transaction opens (`sign_certificate`) and record inside it
(`record_certificate`); `issue_certificate` does both.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from pki.csr import ParsedCSR
from pki.errors import CAKeyError, CertificateLintError, PKIError
from pki.keystore import CertificateAuthority, get_ca
from pki.lint import lint_certificate
from pki.models import Certificate, CertificatePurpose
from pki.profiles import (
    BACKDATE,
    DEVICE_PROFILE,
    SIGNATURE_HASH,
    CertificateRequest,
    EndEntityProfile,
    KeyType,
    PrivateKey,
    PublicKey,
    end_entity_builder,
    serial_hex,
    sha256_fingerprint,
)

# Collisions among 159 random bits are not expected; the loop exists so one can never become
# a duplicate, and the bound so a broken random source cannot loop forever.
SERIAL_ATTEMPTS = 5


@functools.cache
def _lint_signing_key(rsa_ca: bool) -> PrivateKey:
    """A throw-away key, made once per process, that signs lint copies only.

    Same algorithm as the CA, so the copy carries the CA's signature AlgorithmIdentifier and an
    identical TBSCertificate; the linter never verifies the signature itself, so the RSA key is
    small: an RSA-3072 signature would double the CA's signing cost on every issuance.
    """
    if rsa_ca:
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - lint copies only
    return ec.generate_private_key(ec.SECP256R1())


def _lint_before_signing(builder: x509.CertificateBuilder, authority: CertificateAuthority) -> None:
    """Lint a copy signed by a throw-away key; the CA key signs only what passes."""
    lint_key = _lint_signing_key(isinstance(authority.private_key, rsa.RSAPrivateKey))
    findings = lint_certificate(builder.sign(lint_key, SIGNATURE_HASH))
    if findings:
        raise CertificateLintError(
            "The certificate would break RFC 5280, so it was not signed: " + "; ".join(findings)
        )


@dataclass(frozen=True)
class IssuedCertificate:
    record: Certificate
    certificate: x509.Certificate
    #: The private key when the server generated it; None for a CSR. Never stored.
    private_key: PrivateKey | None


@dataclass(frozen=True)
class SignedCertificate:
    """A certificate signed but not yet recorded (see `sign_certificate`)."""

    certificate: x509.Certificate
    common_name: str
    key_type: KeyType
    from_csr: bool
    purpose: CertificatePurpose
    #: The private key when the server generated it; None for a CSR. Never stored.
    private_key: PrivateKey | None
    # What it was signed with, to sign it again with another serial.
    profile: EndEntityProfile
    validity_days: int | None


def issue_certificate(
    common_name: str,
    *,
    key_type: KeyType = KeyType.RSA2048,
    csr: ParsedCSR | None = None,
    private_key: PrivateKey | None = None,
    profile: EndEntityProfile = DEVICE_PROFILE,
    purpose: CertificatePurpose = CertificatePurpose.DEVICE,
    validity_days: int | None = None,
    device_id: uuid.UUID | None = None,
) -> IssuedCertificate:
    """Sign a certificate for `common_name` and record it (`sign_certificate`, then
    `record_certificate`)."""
    signed = sign_certificate(
        common_name,
        key_type=key_type,
        csr=csr,
        private_key=private_key,
        profile=profile,
        purpose=purpose,
        validity_days=validity_days,
    )
    return record_certificate(signed, device_id=device_id)


def sign_certificate(
    common_name: str,
    *,
    key_type: KeyType = KeyType.RSA2048,
    csr: ParsedCSR | None = None,
    private_key: PrivateKey | None = None,
    profile: EndEntityProfile = DEVICE_PROFILE,
    purpose: CertificatePurpose = CertificatePurpose.DEVICE,
    validity_days: int | None = None,
) -> SignedCertificate:
    """Lint and sign a certificate for `common_name`, with a fresh random serial; writes nothing.

    Workflows call it before their transaction opens, so linting and signing never hold
    database locks (on SQLite, the whole database). The key comes from, in order: a parsed
    CSR (its subject is ignored), a private key the caller generated, or a new key of
    `key_type` made here. The private key is returned to the caller and never stored. Whether
    the serial is free is settled by `record_certificate`, once, where the database decides.
    """
    public_key: PublicKey
    if csr is not None:
        public_key, key_type, private_key = csr.public_key, csr.key_type, None
    else:
        private_key = private_key or key_type.generate()
        key_type = KeyType.of(private_key)
        public_key = private_key.public_key()

    authority = get_ca()
    now = timezone.now()
    if authority.certificate.not_valid_after_utc <= now:
        raise CAKeyError("The CA certificate has expired; it cannot issue certificates.")
    days = validity_days if validity_days is not None else settings.CERT_VALIDITY_DAYS
    request = CertificateRequest(
        common_name=common_name,
        public_key=public_key,
        serial=x509.random_serial_number(),
        not_before=max(now - BACKDATE, authority.certificate.not_valid_before_utc),
        not_after=now + dt.timedelta(days=days),
        crl_url=settings.CRL_URL,
        profile=profile,
    )
    builder = end_entity_builder(request, authority.certificate)
    _lint_before_signing(builder, authority)
    return SignedCertificate(
        certificate=builder.sign(authority.private_key, SIGNATURE_HASH),
        common_name=common_name,
        key_type=key_type,
        from_csr=csr is not None,
        purpose=purpose,
        private_key=private_key,
        profile=profile,
        validity_days=validity_days,
    )


def record_certificate(signed: SignedCertificate, *, device_id: uuid.UUID | None = None) -> IssuedCertificate:
    """Record a signed certificate: the one place a serial collision is handled.

    The database's unique serial decides; should the serial be taken already (random 159-bit
    serials: in practice never), the same request is signed again with a fresh one, at most
    SERIAL_ATTEMPTS times. The caller compares `certificate` with what it signed to learn
    whether it changed.
    """
    for _attempt in range(SERIAL_ATTEMPTS):
        certificate = signed.certificate
        try:
            with transaction.atomic():
                record = Certificate.objects.create(
                    serial=serial_hex(certificate.serial_number),
                    fingerprint_sha256=sha256_fingerprint(certificate),
                    common_name=signed.common_name,
                    device_id=device_id,
                    subject=certificate.subject.rfc4514_string(),
                    purpose=signed.purpose,
                    key_type=signed.key_type.value,
                    from_csr=signed.from_csr,
                    not_before=certificate.not_valid_before_utc,
                    not_after=certificate.not_valid_after_utc,
                    pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
                )
        except IntegrityError:
            signed = _signed_again(signed)
            continue
        return IssuedCertificate(record=record, certificate=certificate, private_key=signed.private_key)
    raise PKIError(f"Could not find a free serial number in {SERIAL_ATTEMPTS} attempts.")


def _signed_again(signed: SignedCertificate) -> SignedCertificate:
    """The same certificate request with a new serial (the key stays the device's)."""
    public_key = signed.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return sign_certificate(
        signed.common_name,
        csr=None if signed.private_key else ParsedCSR(public_key=public_key, key_type=signed.key_type),
        private_key=signed.private_key,
        profile=signed.profile,
        purpose=signed.purpose,
        validity_days=signed.validity_days,
    )
