"""The broker's copy of the CA's CRL: checked before it is given, compared, and known enforced.

A CRL that fails its check is never put in place: the broker keeps enforcing the previous one.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.utils import timezone

from broker.errors import BrokerSyncError
from broker.models import BrokerSync
from kernel.fs import write_atomically
from pki.crl import check_crl, crl_number, crl_path
from pki.errors import CRLPublicationError
from pki.keystore import get_ca


def _checked_crl() -> tuple[bytes, int]:
    """The CA's current CRL, refused unless it parses, is signed by the CA and is not stale."""
    try:
        data = crl_path().read_bytes()
        crl = x509.load_pem_x509_crl(data)
    except (OSError, ValueError) as exc:
        raise BrokerSyncError(
            f"The CA's CRL cannot be read ({exc}); the broker keeps its previous CRL."
        ) from None
    try:
        check_crl(crl, get_ca().certificate, timezone.now())
    except CRLPublicationError as exc:
        raise BrokerSyncError(f"{exc.message} The broker keeps its previous CRL.") from None
    return data, crl_number(crl)


def write_broker_file(path: Path, data: bytes) -> None:
    """Put a file the broker reads in place atomically (the CRL, the ACL file)."""
    try:
        write_atomically(path, data, mode=0o644)
    except OSError as exc:
        raise BrokerSyncError(f"The broker file {path.name} could not be written: {exc.strerror}.") from None


def crl_drift() -> list[str]:
    try:
        if Path(settings.BROKER_CRL_FILE).read_bytes() != crl_path().read_bytes():
            return ["the broker's CRL is not the CA's current CRL"]
    except OSError:
        return ["the broker's CRL or the CA's CRL is missing"]
    return []


def copy_crl_to_broker() -> int:
    """Give the broker the CA's current CRL (checked); returns its number."""
    crl, number = _checked_crl()
    write_broker_file(Path(settings.BROKER_CRL_FILE), crl)
    return number


def broker_enforces_crl(number: int) -> bool:
    """Whether the last sync gave the broker this CRL and had it reloaded (or needed no reload)."""
    last = BrokerSync.objects.order_by("-pk").values_list("crl_number", "reloaded").first()
    return last is not None and last == (number, True)


def copy_crl_if_changed() -> tuple[int, bool]:
    """The CA's current CRL's number, and whether it had to be given to the broker now (the
    broker's copy differed); an unchanged copy is neither checked again nor rewritten."""
    try:
        current = crl_path().read_bytes()
        if Path(settings.BROKER_CRL_FILE).read_bytes() == current:
            crl = x509.load_pem_x509_crl(current)
            return crl_number(crl), False
    except (OSError, ValueError, x509.ExtensionNotFound):
        pass  # copy_crl_to_broker says what is wrong
    return copy_crl_to_broker(), True
