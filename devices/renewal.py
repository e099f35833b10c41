"""Renewal: a device replaces its own certificate before it expires (EST simplereenroll,
RFC 7030 4.2.2), with its current certificate as the only credential.

The device keeps its identity: same id, so same subject (CN = device id), same topics and
broker rights (keyed on the id). The certificate it replaced stays valid RENEWAL_GRACE_HOURS
(a device that lost the answer retries with it), then `revoke_superseded_certificates` (beat
and `manage.py revoke_superseded`) revokes it as superseded and tells the broker.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from django.conf import settings
from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F, Max
from django.utils import timezone

from audit.models import AuditAction
from audit.services import record
from broker.dispatch import queue_changes, tell_broker
from devices.errors import (
    ClientCertificateNotCurrent,
    ClientCertificateUnknown,
    RenewalNotDue,
    RenewalRefused,
)
from devices.lifecycle import lock_in_status
from devices.models import Device, DeviceStatus
from kernel.locks import exclusive_lock
from pki.crl import CRL_LOCK
from pki.csr import ParsedCSR
from pki.issuance import IssuedCertificate, record_certificate, sign_certificate
from pki.models import Certificate, CertificatePurpose, CertificateStatus
from pki.profiles import RevocationReason, serial_hex, sha256_fingerprint
from pki.revocation import revoke_certificates


def renewal_opens_at(
    not_before: dt.datetime, not_after: dt.datetime, percent: int | None = None
) -> dt.datetime:
    """When a certificate's renewal window opens: `percent` (RENEWAL_WINDOW_PERCENT) of its
    lifetime before its notAfter."""
    share = (percent if percent is not None else settings.RENEWAL_WINDOW_PERCENT) / 100
    return not_after - (not_after - not_before) * share


def grace_period() -> dt.timedelta:
    return dt.timedelta(hours=settings.RENEWAL_GRACE_HOURS)


def recorded_certificate(presented: x509.Certificate) -> Certificate:
    """The database row of the certificate a device presented, or ClientCertificateUnknown.

    The serial finds it and the fingerprint proves it is the very certificate (the chain check
    was nginx's; this is the portal's own record)."""
    row = (
        Certificate.objects.select_related("device")
        .filter(serial=serial_hex(presented.serial_number), purpose=CertificatePurpose.DEVICE)
        .first()
    )
    if row is None or row.fingerprint_sha256 != sha256_fingerprint(presented) or row.device is None:
        raise ClientCertificateUnknown("The client certificate is not a device certificate of this portal.")
    return row


def check_may_renew(row: Certificate, device: Device, now: dt.datetime) -> None:
    """The presented certificate is good for renewal now, or the reason it is not (RenewalRefused).

    Good: active and unexpired, of an active device, and either the device's newest certificate
    or one a renewal replaced less than RENEWAL_GRACE_HOURS ago; and the renewal window is open,
    or an operator asked for the renewal, or this is a retry (the certificate was replaced already).
    """
    if device.status != DeviceStatus.ACTIVE:
        raise ClientCertificateNotCurrent(f"Device {device.id} is {device.status}; it cannot renew.")
    if row.status == CertificateStatus.REVOKED:
        raise ClientCertificateNotCurrent(f"The client certificate (serial {row.serial}) is revoked.")
    if row.status != CertificateStatus.ACTIVE or row.not_after <= now:
        raise ClientCertificateNotCurrent(f"The client certificate (serial {row.serial}) has expired.")
    newest = device.current_certificate
    if newest is not None and newest.pk != row.pk:
        if row.superseded_at is None or row.superseded_at + grace_period() <= now:
            raise ClientCertificateNotCurrent(
                f"The client certificate (serial {row.serial}) was replaced; use the device's newest one."
            )
        return  # a retry inside the grace period: the renewal was allowed once already
    opens = renewal_opens_at(row.not_before, row.not_after)
    if now < opens and device.renewal_requested_at is None:
        raise RenewalNotDue(
            f"Renewal opens at {opens:%Y-%m-%d %H:%M:%S} UTC ({settings.RENEWAL_WINDOW_PERCENT}% of the "
            "certificate's lifetime before it expires); an operator can allow it earlier.",
            renewal_opens_at=opens.isoformat(),
        )


@dataclass(frozen=True)
class Renewal:
    device: Device
    issued: IssuedCertificate
    previous: Certificate


def authorize_renewal(presented: x509.Certificate, *, address: str | None = None) -> Certificate:
    """The recorded certificate the device presented, if it may renew with it now; else the
    refusal (RenewalRefused), audited."""
    try:
        row = recorded_certificate(presented)
    except ClientCertificateUnknown as refusal:
        refuse_unknown(presented, address=address, reason=refusal.code)
        raise
    device = row.device
    assert device is not None  # recorded_certificate refuses detached certificates
    _checked(row, device.pk, timezone.now(), address)
    return row


def _checked(row: Certificate, device_id: uuid.UUID, now: dt.datetime, address: str | None) -> None:
    try:
        check_may_renew(row, Device.objects.get_with_current_certificate(device_id), now)
    except RenewalRefused as refusal:
        _audit_refusal(row, device_id, refusal, address)
        raise


def _audit_refusal(
    row: Certificate, device_id: uuid.UUID, refusal: RenewalRefused, address: str | None
) -> None:
    record(
        AuditAction.RENEWAL_REFUSED, address=address, device_id=device_id,
        serial=row.serial, code=refusal.code, reason=refusal.message,
    )  # fmt: skip


def renew_device(row: Certificate, csr: ParsedCSR, *, address: str | None = None) -> Renewal:
    """Issue a new certificate, with the CSR's public key, for the device whose certificate `row`
    (`authorize_renewal`) authenticated the request.

    The CA sets the subject and extensions as registration does (the CSR's subject is ignored),
    so the device keeps its id, topics and broker rights. The checks run again under the
    device's lock: two renewals at once replace each other, never leave two current certificates
    unmarked.
    """
    assert row.device_id is not None
    # Signed (and linted) before the transaction, as registration does.
    signed = sign_certificate(str(row.device_id), csr=csr)
    try:
        # No CRL lock: nothing is revoked here (the grace job, or the call below, revokes).
        with transaction.atomic():
            locked = Device.objects.select_for_update().get(pk=row.device_id)
            now = timezone.now()
            row.refresh_from_db()
            check_may_renew(row, Device.objects.get_with_current_certificate(locked.pk), now)
            issued = record_certificate(signed, device_id=locked.id)
            replaced = Certificate.objects.filter(
                device=locked, status=CertificateStatus.ACTIVE, superseded_at__isnull=True
            ).exclude(pk=issued.record.pk)
            replaced.update(superseded_at=now)
            locked.renewed(issued.record, row, address=address)
    except RenewalRefused as refusal:
        # Changed meanwhile (revoked, renewed by a concurrent request): audited after the rollback.
        _audit_refusal(row, row.device_id, refusal, address)
        raise
    if settings.RENEWAL_GRACE_HOURS == 0:
        revoke_superseded_certificates()
    return Renewal(device=Device.objects.get_with_current_certificate(locked.pk), issued=issued, previous=row)


def refuse_unknown(presented: x509.Certificate | None, *, address: str | None, reason: str) -> None:
    """Audit a renewal refused before any device was known (no certificate, or not ours)."""
    serial = serial_hex(presented.serial_number) if presented is not None else None
    record(AuditAction.RENEWAL_REFUSED, address=address, serial=serial, code=reason)


def request_renewal(device: Device, *, actor: Any = None, address: str | None = None) -> Device:
    """An operator lets an active device renew before its window opens (after a CA change, a
    suspected key leak); its next renewal clears the request."""
    with transaction.atomic():
        locked = lock_in_status(device, DeviceStatus.ACTIVE, "only active devices can renew")
        locked.request_renewal(actor=actor, address=address)
    return Device.objects.get_with_current_certificate(device.pk)


def superseded_past_grace(now: dt.datetime | None = None) -> Iterable[Certificate]:
    cutoff = (now or timezone.now()) - grace_period()
    return Certificate.objects.filter(status=CertificateStatus.ACTIVE, superseded_at__lte=cutoff)


def revoke_superseded_certificates(now: dt.datetime | None = None) -> int:
    """Revoke (reason superseded) the certificates renewals replaced more than RENEWAL_GRACE_HOURS
    ago, publish the CRL, and bring the broker in step; returns how many."""
    with exclusive_lock(CRL_LOCK), transaction.atomic():
        due = list(superseded_past_grace(now))
        if not due:
            return 0
        devices: list[uuid.UUID] = sorted({c.device_id for c in due if c.device_id is not None})
        queue_changes(devices)  # with the revocation, so a crash after the commit leaves it for the catch-up
        revoke_certificates(due, RevocationReason.SUPERSEDED)
    # The superseded certificates are on the CRL: the broker must refuse them too.
    tell_broker(devices, queued=True)
    return len(due)


def renewal_due_devices(now: dt.datetime | None = None) -> list[uuid.UUID]:
    """Active devices whose newest certificate is inside its renewal window and not renewed yet.

    The window is a share of each certificate's own lifetime, so the exact test is made here
    (date arithmetic differs between SQLite and PostgreSQL) on the rows the database bounds.
    """
    now = now or timezone.now()
    rows = Certificate.objects.active(now).filter(
        purpose=CertificatePurpose.DEVICE, superseded_at__isnull=True, device__status=DeviceStatus.ACTIVE
    )
    # No window opens earlier than the longest lifetime's share before notAfter: the database
    # leaves out every certificate further from expiry, so a scrape reads the few near it.
    longest = rows.aggregate(
        longest=Max(ExpressionWrapper(F("not_after") - F("not_before"), DurationField()))
    )
    if longest["longest"] is None:
        return []
    share = settings.RENEWAL_WINDOW_PERCENT / 100
    rows = rows.filter(not_after__lte=now + longest["longest"] * share)
    due = {
        device_id
        for device_id, not_before, not_after in rows.values_list("device_id", "not_before", "not_after")
        if device_id is not None and renewal_opens_at(not_before, not_after) <= now
    }
    return sorted(due)
