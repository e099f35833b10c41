"""Certificate authority workflows: create the CA, issue, revoke, publish the CRL.

Plain typed functions; views, commands, tasks and the device workflows call these and hold no
PKI logic of their own.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import CharField
from django.db.models.functions import Cast
from django.utils import timezone

from kernel.fs import write_atomically
from kernel.locks import exclusive_lock
from pki.errors import CAKeyError, CertificateLintError, CRLPublicationError, PKIError
from pki.keystore import CertificateAuthority, forget_loaded_ca, get_ca, keystore
from pki.lint import lint_certificate
from pki.models import Certificate, CertificatePurpose, CertificateRevocationList, CertificateStatus
from pki.profiles import (
    BACKDATE,
    DEVICE_PROFILE,
    SIGNATURE_HASH,
    CertificateRequest,
    EndEntityProfile,
    KeyType,
    ParsedCSR,
    PrivateKey,
    PublicKey,
    RevocationReason,
    RevokedEntry,
    build_ca_certificate,
    build_crl,
    end_entity_builder,
    serial_hex,
    sha256_fingerprint,
)

DEFAULT_CA_COMMON_NAME = "IoT Device Onboarding Root CA"
DEFAULT_CA_VALIDITY_DAYS = 3650
# A ten-year root outlives RSA-2048's recommended horizon (NIST SP 800-57: 2030), so the root
# defaults to RSA-3072; device keys stay RSA-2048 by default, as the original design asks.
DEFAULT_CA_KEY_TYPE = KeyType.RSA3072
# Collisions among 159 random bits are not expected; the loop exists so one can never become
# a duplicate, and the bound so a broken random source cannot loop forever.
SERIAL_ATTEMPTS = 5


def crl_path() -> Path:
    return Path(settings.CA_ROOT_PATH) / "crl.pem"


@dataclass(frozen=True)
class CAStatus:
    certificate: x509.Certificate
    created: bool


def initialize_ca(
    *,
    common_name: str = DEFAULT_CA_COMMON_NAME,
    validity_days: int = DEFAULT_CA_VALIDITY_DAYS,
    key_type: KeyType = DEFAULT_CA_KEY_TYPE,
) -> CAStatus:
    """Create the root CA and its first CRL, once. An existing CA is left exactly as it is."""
    store = keystore()
    if store.exists():
        return CAStatus(certificate=store.load().certificate, created=False)
    try:
        # The first CRL goes into the database: find out now, before any key is made.
        CertificateRevocationList.objects.exists()
    except DatabaseError:
        raise PKIError("The database is not set up yet: run `python manage.py migrate` first.") from None
    if validity_days < 1:
        raise PKIError("The CA's validity must be at least one day.")
    private_key = key_type.generate()
    now = timezone.now()
    certificate = build_ca_certificate(
        private_key,
        common_name=common_name,
        not_before=now - BACKDATE,
        not_after=now + dt.timedelta(days=validity_days),
        serial=x509.random_serial_number(),
    )
    store.save(certificate, private_key)
    (Path(settings.CA_ROOT_PATH) / "devices").mkdir(mode=0o700, exist_ok=True)
    forget_loaded_ca()
    publish_crl()
    return CAStatus(certificate=certificate, created=True)


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
    """Lint and sign a certificate for `common_name`; writes nothing.

    Workflows call it before their transaction opens, so linting and signing never hold
    database locks (on SQLite, the whole database). The key comes from, in order: a parsed
    CSR (its subject is ignored), a private key the caller generated, or a new key of
    `key_type` made here. The private key is returned to the caller and never stored.
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
    for _attempt in range(SERIAL_ATTEMPTS):
        serial = x509.random_serial_number()
        if not Certificate.objects.filter(serial=serial_hex(serial)).exists():
            break
    else:
        raise PKIError(f"Could not find a free serial number in {SERIAL_ATTEMPTS} attempts.")
    request = CertificateRequest(
        common_name=common_name,
        public_key=public_key,
        serial=serial,
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
    """Record a signed certificate. Should another process have taken its serial meanwhile
    (random 159-bit serials: in practice never), the same request is signed again."""
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


def revoke_certificate(
    certificate: Certificate, reason: RevocationReason = RevocationReason.UNSPECIFIED
) -> CertificateRevocationList:
    """Revoke and publish the CRL that lists it, all or nothing.

    The new CRL is written before the transaction commits: if writing fails the revocation is
    rolled back and the caller gets the error, so the database never says "revoked" while the
    CRL served to brokers does not.
    """
    record = revoke_certificates([certificate], reason)
    certificate.refresh_from_db()
    return record


def revoke_certificates(
    certificates: Iterable[Certificate], reason: RevocationReason
) -> CertificateRevocationList:
    """Revoke several certificates and publish one CRL listing them all.

    Callable inside a caller's transaction (a device workflow); the CRL lock is re-entrant.
    """
    with exclusive_lock("crl"), transaction.atomic():
        now = timezone.now()
        primary_keys = [certificate.pk for certificate in certificates]
        for locked in Certificate.objects.select_for_update().filter(pk__in=primary_keys).order_by("pk"):
            locked.revoke(reason, when=now)
            locked.save(update_fields=["status", "revoked_at", "revocation_reason"])
        return _publish_crl_locked()


def publish_crl() -> CertificateRevocationList:
    """Sign a fresh CRL with the next CRL number and put it in place atomically."""
    with exclusive_lock("crl"), transaction.atomic():
        return _publish_crl_locked()


#: The CRL this process last wrote: its path, the file's identity (inode, mtime, size), its number.
_last_written: tuple[Path, tuple[int, int, int], int] | None = None


def _file_identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _published_crl_number(path: Path) -> int:
    """The number of the CRL on disk, so numbering grows even past a database restored from backup.

    A file that is still the one this process wrote is not parsed again (0.05 s at 100k
    entries). Anything else (another process's CRL, a restored one) is read.
    """
    try:
        if _last_written is not None and _last_written[:2] == (path, _file_identity(path)):
            return _last_written[2]
        crl = x509.load_pem_x509_crl(path.read_bytes())
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return 0


def _publish_crl_locked() -> CertificateRevocationList:
    authority = get_ca()
    now = timezone.now().replace(microsecond=0)
    path = crl_path()
    last = CertificateRevocationList.objects.order_by("-number").values_list("number", flat=True).first()
    number = max(last or 0, _published_crl_number(path)) + 1
    next_update = now + dt.timedelta(hours=settings.CRL_VALIDITY_HOURS)
    with collector_paused():
        entries = _revoked_entries(now)
        crl = build_crl(
            issuer=authority.certificate,
            signing_key=authority.private_key,
            revoked=entries,
            crl_number=number,
            this_update=now,
            next_update=next_update,
        )
    # Signed just now with the CA key, which the key store refuses to load unless it belongs to
    # the CA certificate (test_ca_bootstrap): verifying the signature again would prove nothing
    # more and cost a sixth of the publication at 100k entries. A CRL read back from disk (broker
    # sync, dashboard) is verified in full by check_crl.
    _check_next_update(crl, now)
    record = CertificateRevocationList.objects.create(
        number=number, this_update=now, next_update=next_update, revoked_count=len(entries)
    )
    global _last_written
    try:
        write_atomically(path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
    except OSError as exc:
        raise CRLPublicationError(f"The new CRL could not be written to {path}: {exc.strerror}.") from None
    try:
        _last_written = (path, _file_identity(path), number)
    except OSError:
        _last_written = None
    return record


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a large structure without cycles is built.

    Reading and building 100k CRL entries allocates enough objects to set off full collections,
    each walking every object of the process: a fifth of the publication at 100k (median of
    eight alternating runs, 1.19 s with it, 0.94 s without). The entries hold no cycles, so
    nothing is left for it to collect; it runs again as soon as the block ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _revoked_entries(now: dt.datetime) -> list[RevokedEntry]:
    """Every certificate the CRL must list, read without the ORM's per-row conversions.

    At 100k revoked certificates Django's datetime converters cost more than signing the CRL,
    so the query runs on a plain cursor: SQLite gives naive UTC text, PostgreSQL aware values.
    On SQLite the column is also cast to text: sqlite3 runs the converter Django registers for
    columns declared `datetime` even on a plain cursor, and an expression declares no type.
    """
    revoked_at: Any = "revoked_at"
    if connection.vendor == "sqlite":
        revoked_at = Cast("revoked_at", output_field=CharField())
    query = (
        Certificate.objects.on_crl(now)
        .order_by("revoked_at")
        .values_list("serial", revoked_at, "revocation_reason")
    )
    sql, params = query.query.sql_with_params()
    reasons = {reason.value: reason for reason in RevocationReason}
    reasons[""] = RevocationReason.UNSPECIFIED
    parse_time = dt.datetime.fromisoformat
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # One comprehension, names bound locally: a loop of appends costs a tenth more at 100k.
        # revoked_at is set on every revoked row (a database constraint says so).
        return [
            RevokedEntry(
                int(serial, 16),
                parse_time(revoked_at) if isinstance(revoked_at, str) else revoked_at,
                reasons[reason],
            )
            for serial, revoked_at, reason in cursor.fetchall()
        ]


def check_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate, now: dt.datetime) -> None:
    """Refuse to publish a CRL a broker would misread: wrong signer or no future nextUpdate.

    A broker given an expired CRL refuses every device; one given a damaged CRL may stop
    checking revocation altogether.
    """
    public_key = issuer.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CRLPublicationError("The CA's public key type cannot verify CRLs.")
    if not crl.is_signature_valid(public_key):
        raise CRLPublicationError("The CRL's signature does not verify with the CA certificate.")
    _check_next_update(crl, now)


def _check_next_update(crl: x509.CertificateRevocationList, now: dt.datetime) -> None:
    if crl.next_update_utc is None or crl.next_update_utc <= now:
        raise CRLPublicationError("The CRL's nextUpdate is not in the future.")


def mark_expired_certificates(now: dt.datetime | None = None) -> int:
    """Active certificates past their notAfter become `expired`; returns how many."""
    return Certificate.objects.filter(
        status=CertificateStatus.ACTIVE, not_after__lte=now or timezone.now()
    ).update(status=CertificateStatus.EXPIRED)


def crl_refresh_due(now: dt.datetime | None = None) -> bool:
    """Due at half the CRL's validity, so a CRL never expires even when nothing is revoked."""
    now = now or timezone.now()
    try:
        crl = x509.load_pem_x509_crl(crl_path().read_bytes())
    except (OSError, ValueError):
        return True
    next_update = crl.next_update_utc
    if next_update is None:
        return True
    return now >= crl.last_update_utc + (next_update - crl.last_update_utc) / 2


def current_crl_record() -> CertificateRevocationList | None:
    return CertificateRevocationList.objects.order_by("-number").first()
