"""The certificate revocation list: publish it (signed, numbered, written atomically), read it
back verified, and tell when it is due again.

`publish_crl` and everything that rewrites the CRL file run under `CRL_LOCK`. The CRL lists what
`pki.revocation` marks revoked in the database.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.db import connection, transaction
from django.db.models import CharField
from django.db.models.functions import Cast
from django.utils import timezone

from kernel.fs import write_atomically
from kernel.locks import exclusive_lock
from pki.errors import CANotInitialized, CRLInvalid, CRLNotPublished, CRLPublicationError
from pki.keystore import get_ca, keystore
from pki.models import Certificate, CertificateRevocationList
from pki.profiles import RevocationReason, RevokedEntry, build_crl

#: The lock held by whatever writes the CRL file or the revocations it lists (re-entrant).
CRL_LOCK = "crl"

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _LastOne(Generic[K, V]):
    """One remembered value and the key it is good for: the last CRL this process wrote, or
    verified. A different key misses, so anything changed since is read again in full."""

    def __init__(self) -> None:
        self._entry: tuple[K, V] | None = None

    def get(self, key: K) -> V | None:
        entry = self._entry
        return entry[1] if entry is not None and entry[0] == key else None

    def put(self, key: K, value: V) -> None:
        self._entry = (key, value)

    def clear(self) -> None:
        self._entry = None


def crl_path() -> Path:
    return Path(settings.CA_ROOT_PATH) / "crl.pem"


def crl_number(crl: x509.CertificateRevocationList) -> int:
    """The CRL's CRL number (RFC 5280 5.2.3); `x509.ExtensionNotFound` when it carries none."""
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def current_crl_record() -> CertificateRevocationList | None:
    return CertificateRevocationList.objects.order_by("-number").first()


# --- Publishing ----------------------------------------------------------------------------


def publish_crl() -> CertificateRevocationList:
    """Sign a fresh CRL with the next CRL number and put it in place atomically."""
    with exclusive_lock(CRL_LOCK), transaction.atomic():
        return publish_crl_locked()


#: The CRL file this process last wrote, keyed by its path and identity (inode, mtime, size),
#: and its number.
_written: _LastOne[tuple[Path, tuple[int, int, int]], int] = _LastOne()


def _file_identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _published_crl_number(path: Path) -> int:
    """The number of the CRL on disk, so numbering grows even past a database restored from backup.

    A file that is still the one this process wrote is not parsed again (parsing a large CRL is
    slow). Anything else (another process's CRL, a restored one) is read.
    """
    try:
        number = _written.get((path, _file_identity(path)))
        if number is not None:
            return number
        return crl_number(x509.load_pem_x509_crl(path.read_bytes()))
    except (OSError, ValueError, x509.ExtensionNotFound):
        return 0


def publish_crl_locked() -> CertificateRevocationList:
    """`publish_crl` for a caller that already holds `CRL_LOCK` inside a transaction."""
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
    # more and cost a good part of a large publication. A CRL read back from disk (broker
    # sync, dashboard) is verified in full by check_crl.
    _check_next_update(crl, now)
    record = CertificateRevocationList.objects.create(
        number=number, this_update=now, next_update=next_update, revoked_count=len(entries)
    )
    try:
        write_atomically(path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
    except OSError as exc:
        raise CRLPublicationError(f"The new CRL could not be written to {path}: {exc.strerror}.") from None
    try:
        _written.put((path, _file_identity(path)), number)
    except OSError:
        _written.clear()
    return record


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a large structure without cycles is built.

    Reading and building a large CRL's entries allocates enough objects to set off full
    collections, each walking every object of the process: a good part of a large publication
    (docs/benchmarks.md). The entries hold no cycles, so nothing is left for it to collect; it
    runs again as soon as the block ends.
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

    For a large fleet Django's datetime converters cost more than signing the CRL, so the
    query runs on a plain cursor: SQLite gives naive UTC text, PostgreSQL aware values.
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
        # One comprehension, names bound locally: cheaper than a loop of appends.
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


# --- Serving and reporting -----------------------------------------------------------------


@dataclass(frozen=True)
class PublishedCRL:
    """The CRL file's exact bytes and the CRL they hold, verified by read_published_crl."""

    pem: bytes
    der: bytes
    crl: x509.CertificateRevocationList
    number: int


#: The last CRL this process verified, keyed by the SHA-256 of its bytes and of the CA certificate:
#: parsing and verifying a CRL of a large fleet costs far more than hashing it
#: (docs/benchmarks.md). Any change to either file, one flipped character, misses the cache and
#: is verified again in full; nextUpdate is checked on every read.
_verified: _LastOne[bytes, PublishedCRL] = _LastOne()


def read_published_crl(now: dt.datetime | None = None) -> PublishedCRL:
    """The CRL on disk, verified against the CA certificate before anyone is told it is good.

    Everything that serves the CRL (/ca.crl, /crl.pem) or reports on it (/health, the dashboard)
    reads it here, so a file damaged or tampered with after publication (one flipped base64
    character) is refused everywhere alike: it must parse, carry a CRL number, name the CA as
    issuer and be signed by the CA's key (RFC 5280 6.3.3 (f), (g)), and have a future nextUpdate.
    Only the CA certificate is read, never the CA key: hosts that only serve can verify.
    """
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
    published = _verified.get(key)
    if published is None:
        published = _verify(pem, issuer)
        _verified.put(key, published)
    next_update = published.crl.next_update_utc
    if next_update is None or next_update <= (now or timezone.now()):
        raise CRLInvalid("The CRL's nextUpdate has passed: brokers and devices will refuse it.")
    return published


def _verify(pem: bytes, issuer: x509.Certificate) -> PublishedCRL:
    try:
        crl = x509.load_pem_x509_crl(pem)
        number = crl_number(crl)
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
