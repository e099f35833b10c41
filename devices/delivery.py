"""Credential delivery: the encrypted bundle on disk and its one-time, expiring download link.

Layout, as in the original design: `CA_ROOT_PATH/devices/<id>/device.crt` and `creds.zip`
(AES-256 encrypted). The bundle password is returned once and never stored; the link token is
stored only as its SHA-256 digest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import AuditAction
from broker.dispatch import default_rules, public_address
from devices.bundles import BundleContents, build_bundle, new_bundle_password
from devices.models import Device, DeviceStatus, DownloadAttempt, DownloadLink, DownloadOutcome
from kernel.errors import ServiceError
from kernel.fs import write_atomically
from pki.keystore import get_ca
from pki.models import Certificate
from pki.profiles import PrivateKey, private_key_pem, serial_hex

logger = logging.getLogger(__name__)

TOKEN_BYTES = 32  # 256 bits, well above the 128 the threat model asks for


class BundleNotFound(ServiceError):
    code = "unknown_link"
    status = 404


class BundleGone(ServiceError):
    status = 410


class BundleNotReady(ServiceError):
    code = "bundle_not_ready"
    status = 409


class BundleUnavailable(ServiceError):
    code = "bundle_missing"
    status = 503


def device_directory(device_id: object) -> Path:
    return Path(settings.CA_ROOT_PATH) / "devices" / str(device_id)


BUNDLE_NAME = "creds.zip"


def bundle_path(device_id: object) -> Path:
    return device_directory(device_id) / BUNDLE_NAME


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def download_url(token: str) -> str:
    return f"{settings.PORTAL_URL}/download/{token}"


@dataclass(frozen=True)
class IssuedBundle:
    link: DownloadLink
    #: Shown once to whoever asked for the bundle; neither is stored.
    token: str
    password: str

    @property
    def url(self) -> str:
        return download_url(self.token)


@dataclass(frozen=True)
class BundleSecrets:
    """The bundle password and the link token: handed to the requester once, never stored."""

    password: str
    token: str

    @classmethod
    def new(cls) -> BundleSecrets:
        return cls(password=new_bundle_password(), token=secrets.token_urlsafe(TOKEN_BYTES))


def open_link(
    device: Device,
    token: str,
    *,
    actor: User | None = None,
    bundle: tuple[Certificate, bytes] | None = None,
    first: bool = False,
) -> DownloadLink:
    """A new link for the device; older unused links are withdrawn (`first`: the device was
    created in this transaction and has none).

    With `bundle` (the certificate and the encrypted ZIP, built beforehand) the link is created
    complete and the files are written: call it last inside the workflow's transaction, as
    `attach`. Without it, the link answers "not ready yet" until `attach` gives it a bundle
    (later, on a worker).
    """
    now = timezone.now()
    if not first:
        DownloadLink.objects.filter(device=device, used_at__isnull=True, withdrawn_at__isnull=True).update(
            withdrawn_at=now
        )
    certificate, data = bundle if bundle is not None else (None, b"")
    link = DownloadLink.objects.create(
        device=device,
        certificate=certificate,
        token_digest=token_digest(token),
        bundle_sha256=hashlib.sha256(data).hexdigest() if bundle is not None else "",
        created_by=actor,
        expires_at=now + dt.timedelta(minutes=settings.DOWNLOAD_EXPIRY_MINUTES),
    )
    if certificate is not None:
        _write_files(link.device_id, certificate, data)
    return link


def package(
    device: Device, certificate: x509.Certificate, private_key: PrivateKey | None, password: str
) -> bytes:
    """The encrypted ZIP for a device: its key (server-generated keys only), certificate, the
    CA certificate and its connection settings. Pure: it writes nothing, so workflows build it
    before their transaction opens."""
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    broker = public_address()
    return build_bundle(
        BundleContents(
            device_id=str(device.id),
            device_name=device.name,
            certificate_pem=certificate_pem,
            ca_certificate_pem=get_ca().certificate_pem,
            private_key_pem=private_key_pem(private_key) if private_key is not None else None,
            broker_host=broker.host,
            broker_port=broker.port,
            topics=[{"filter": rule.filter, "access": rule.access} for rule in default_rules(str(device.id))],
            serial=serial_hex(certificate.serial_number),
            not_after=certificate.not_valid_after_utc.isoformat(),
        ),
        password,
    )


def attach(link: DownloadLink, certificate: Certificate, data: bytes) -> None:
    """Give the link its bundle and write the device's files.

    Call it last inside the workflow's transaction: the files are written after every row, so
    a failure before them leaves the files as they were, and a failure in writing them rolls
    the rows back. The link's lifetime starts now, when it can first be used.
    """
    link.certificate = certificate
    link.bundle_sha256 = hashlib.sha256(data).hexdigest()
    link.expires_at = timezone.now() + dt.timedelta(minutes=settings.DOWNLOAD_EXPIRY_MINUTES)
    link.save(update_fields=["certificate", "bundle_sha256", "expires_at"])
    _write_files(link.device_id, certificate, data)


def _write_files(device_id: object, certificate: Certificate, data: bytes) -> None:
    directory = device_directory(device_id)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(directory / "device.crt", certificate.pem.encode(), mode=0o644)
    write_atomically(directory / "creds.zip", data, mode=0o600)


def create_bundle(
    device: Device, certificate: Certificate, private_key: PrivateKey | None, *, actor: User | None = None
) -> IssuedBundle:
    """Package the credentials now and open a new link to them, complete."""
    fresh = BundleSecrets.new()
    parsed = x509.load_pem_x509_certificate(certificate.pem.encode())
    data = package(device, parsed, private_key, fresh.password)
    link = open_link(device, fresh.token, actor=actor, bundle=(certificate, data))
    return IssuedBundle(link=link, token=fresh.token, password=fresh.password)


def withdraw_links(device: Device) -> None:
    """A revoked device's open links stop working and its bundle is deleted: an intercepted
    link must not hand out the key of a device revoked for key compromise.

    The database withdraws the links (that is what stops a download); the file goes only once
    the caller's transaction commits, and a file that cannot be deleted then (a read-only or
    failing disk) blocks nothing: it is logged, shown by /health and deleted by the next
    `cleanup_bundles`. A workflow rolled back keeps its bundle, as its links stay valid.
    """
    DownloadLink.objects.filter(device=device, used_at__isnull=True, withdrawn_at__isnull=True).update(
        withdrawn_at=timezone.now()
    )
    transaction.on_commit(partial(delete_bundle, device.id))


def delete_bundle(device_id: object) -> bool:
    """Delete the device's creds.zip; False (logged, never raised) when the disk refuses."""
    try:
        bundle_path(device_id).unlink(missing_ok=True)
    except OSError as exc:
        logger.error(
            "the bundle of device %s could not be deleted (%s); cleanup_bundles will try again",
            device_id,
            exc.strerror,
        )
        return False
    return True


def revoked_bundles_left() -> list[str]:
    """Revoked devices whose bundle is still on disk: a deletion that failed, awaiting cleanup.

    Only devices revoked before their bundle was downloaded can have one (a download deletes
    it), so this looks at few rows however large the fleet.
    """
    candidates = (
        DownloadLink.objects.filter(
            device__status=DeviceStatus.REVOKED, used_at__isnull=True, certificate__isnull=False
        )
        .order_by()
        .values_list("device_id", flat=True)
        .distinct()
    )
    return sorted(str(device_id) for device_id in candidates if bundle_path(device_id).exists())


def remove_device_files(device_id: object) -> None:
    """Forget a device's files (after a failed registration, or when the device is deleted)."""
    shutil.rmtree(device_directory(device_id), ignore_errors=True)


@dataclass(frozen=True)
class Download:
    data: bytes
    filename: str


def _record(
    outcome: DownloadOutcome, link: DownloadLink | None, address: str | None, user_agent: str
) -> None:
    DownloadAttempt.objects.create(
        link=link,
        device_id=link.device_id if link else None,
        outcome=outcome,
        address=address,
        user_agent=user_agent[:300],
    )


def _discard_bundle(link: DownloadLink) -> None:
    """Delete creds.zip if it is still this link's bundle (a newer one may have replaced it).

    Cleanup never fails the caller: after a download the holder has the ZIP, and the link is
    used, whatever the disk says. A file the disk refuses to delete is logged and left to
    `cleanup_bundles` (`discard_expired_bundles`)."""
    path = bundle_path(link.device_id)
    try:
        if hashlib.sha256(path.read_bytes()).hexdigest() == link.bundle_sha256:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.error(
            "the bundle of device %s could not be deleted (%s); cleanup_bundles will try again",
            link.device_id,
            exc.strerror,
        )


def _find_link(token: str) -> DownloadLink | None:
    return (
        DownloadLink.objects.select_related("device", "certificate")
        .filter(token_digest=token_digest(token))
        .first()
    )


def _refusal(link: DownloadLink, now: dt.datetime) -> tuple[DownloadOutcome, ServiceError] | None:
    """Why the link cannot hand out its bundle now, or None if it can (the file aside)."""
    if link.device.status == DeviceStatus.REVOKED:
        # Said first and plainly: "use the newest link" would send the holder looking for one.
        return DownloadOutcome.REVOKED, _gone(
            "device_revoked",
            "The device was revoked, so its credentials can no longer be downloaded or used.",
            next_step="Ask an operator whether the device should be registered again.",
        )
    if link.used_at is not None:
        return DownloadOutcome.REUSED, _gone(
            "link_used", f"This link was already used at {link.used_at:%Y-%m-%d %H:%M} UTC."
        )
    if link.withdrawn_at is None and link.certificate is None:
        return DownloadOutcome.NOT_READY, BundleNotReady(
            "The device is still being provisioned and its bundle is not ready yet; "
            "try this link again in a few seconds. It stays valid until it is used."
        )
    if link.withdrawn_at is not None or link.certificate is None or link.certificate.status != "active":
        return DownloadOutcome.WITHDRAWN, _gone(
            "link_withdrawn", "A newer bundle replaced this one; use the newest link."
        )
    if link.expires_at <= now:
        return DownloadOutcome.EXPIRED, _gone(
            "link_expired", f"This link expired at {link.expires_at:%Y-%m-%d %H:%M} UTC."
        )
    return None


def check_link(token: str) -> DownloadLink:
    """The link, if its bundle could be downloaded now; the refusal otherwise. Records and changes
    nothing: a look at a link (a browser opening it, a chat previewer) must not use it up."""
    link = _find_link(token)
    if link is None:
        raise BundleNotFound("This download link does not exist. Check that it was copied whole.")
    refusal = _refusal(link, timezone.now())
    if refusal is not None:
        raise refusal[1]
    return link


def download_bundle(token: str, *, address: str | None = None, user_agent: str = "") -> Download:
    """Hand out the bundle once. Every attempt, granted or refused, is recorded."""
    link = _find_link(token)
    if link is None:
        _record(DownloadOutcome.UNKNOWN, None, address, user_agent)
        raise BundleNotFound("This download link does not exist. Check that it was copied whole.")
    now = timezone.now()
    refusal = _refusal(link, now)
    if refusal is not None:
        outcome, error = refusal
        _record(outcome, link, address, user_agent)
        if outcome == DownloadOutcome.EXPIRED:
            _discard_bundle(link)
        raise error
    try:
        data = bundle_path(link.device_id).read_bytes()
    except FileNotFoundError:
        data = b""
    if hashlib.sha256(data).hexdigest() != link.bundle_sha256:
        _record(DownloadOutcome.MISSING, link, address, user_agent)
        raise BundleUnavailable(
            "The bundle for this link is missing on the server. Ask an operator for a new bundle."
        )
    # The database decides who gets it: of two simultaneous requests one updates the row.
    claimed = DownloadLink.objects.filter(
        pk=link.pk, used_at__isnull=True, withdrawn_at__isnull=True, expires_at__gt=now
    ).update(used_at=now)
    if claimed != 1:
        _record(DownloadOutcome.REUSED, link, address, user_agent)
        raise _gone("link_used", "This link was already used.")
    _record(DownloadOutcome.SUCCESS, link, address, user_agent)
    audit.record(
        AuditAction.BUNDLE_DOWNLOADED, address=address, device_id=link.device_id, user_agent=user_agent[:300]
    )
    _discard_bundle(link)
    return Download(data=data, filename=f"{link.device_id}-credentials.zip")


def _gone(code: str, message: str, next_step: str = "Ask an operator for a new bundle.") -> BundleGone:
    error = BundleGone(f"{message} {next_step}")
    error.code = code
    return error


def discard_expired_bundles(now: dt.datetime | None = None) -> int:
    """Delete the files of links that expired unused, and the bundles revoked devices left
    behind (a deletion at revocation that the disk refused); returns how many were deleted."""
    now = now or timezone.now()
    removed = 0
    for link in DownloadLink.objects.filter(used_at__isnull=True, expires_at__lte=now):
        path = bundle_path(link.device_id)
        if path.exists():
            _discard_bundle(link)  # the disk refuses: logged, and the next run tries again
            removed += 0 if path.exists() else 1
    for device_id in revoked_bundles_left():
        removed += 1 if delete_bundle(device_id) else 0
    removed += _discard_served_bundles_left()
    return removed


#: A bundle file younger than this may belong to a registration whose transaction has not
#: committed yet (its link is not visible here): never touched by the cleanup.
SETTLED_AFTER = dt.timedelta(minutes=10)


def _discard_served_bundles_left() -> int:
    """Delete bundle files that a download already served but the disk refused to delete then.

    Bundles live on disk only until their one download, so this walks the few device
    directories that hold one, whatever the fleet's size."""
    removed = 0
    settled = (timezone.now() - SETTLED_AFTER).timestamp()
    for path in device_directory("").glob(f"*/{BUNDLE_NAME}"):
        try:
            if path.stat().st_mtime > settled:
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue
        served = DownloadLink.objects.filter(
            device_id=path.parent.name, bundle_sha256=digest, used_at__isnull=False
        ).exists()
        if served and delete_bundle(path.parent.name):
            removed += 1
    return removed
