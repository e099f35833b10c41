"""Enrolment workflows: one-time enrolment codes, and enrolment groups that vouch for factory
certificates. Plain typed functions for the EST endpoints, the API, the portal and the admin.

Refusals are counted and audited in transactions of their own, committed before the error is
raised: call `check_enrollment_code` and `match_enrollment_group` outside any transaction of the
caller's, or a rollback takes the failure count and the audit record with it. The one write a
successful enrolment makes (`consume_enrollment_code`) belongs inside the caller's transaction,
beside the certificate it pays for: if signing fails, the code stays usable.
"""

from __future__ import annotations

import datetime as dt
import hmac
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import record
from devices.errors import HardwareIdConflict
from devices.models import Device, DeviceStatus
from devices.registration import refuse_taken_hardware_id
from enrollment.errors import (
    EnrollmentCodeExpired,
    EnrollmentCodeInvalid,
    EnrollmentCodeUsed,
    EnrollmentError,
    EnrollmentGroupDisabled,
    EnrollmentGroupExists,
    EnrollmentLocked,
    FactoryCertificateUntrusted,
    HardwareIdNotAllowed,
)
from enrollment.factory import check_factory_certificate, fingerprint, parse_ca_certificate
from enrollment.models import EnrollmentCode, EnrollmentGroup, code_digest

Actor = AbstractBaseUser | AnonymousUser | None

INVALID_CODE = "The device id and enrolment code do not match."


def _user_or_none(actor: Actor) -> User | None:
    return actor if isinstance(actor, User) else None


# --- One-time enrolment codes ---


def issue_enrollment_code(
    device: Device, *, actor: Actor = None, address: str | None = None, now: dt.datetime | None = None
) -> str:
    """A new enrolment code for `device`, returned this once; only its digest is kept. Replaces
    the device's earlier code (used or not) and clears its failure count and lockout."""
    now = now or timezone.now()
    code = EnrollmentCode.new_code()
    expires_at = now + dt.timedelta(days=settings.ENROLLMENT_CODE_DAYS)
    with transaction.atomic():
        EnrollmentCode.objects.update_or_create(
            device=device,
            defaults={
                "digest": code_digest(code),
                "created_by": _user_or_none(actor),
                "expires_at": expires_at,
                "used_at": None,
                "failed_attempts": 0,
                "locked_until": None,
            },
        )
        record(
            AuditAction.ENROLLMENT_CODE_ISSUED,
            actor=actor,
            address=address,
            device_id=device.id,
            expires_at=expires_at.isoformat(),
        )
    return code


def check_enrollment_code(
    device_id: uuid.UUID | str, code: str, *, address: str | None = None, now: dt.datetime | None = None
) -> EnrollmentCode:
    """The device's enrolment code if `code` is it, unused and unexpired; else a refusal,
    counted toward the device's lockout and audited (both committed before the error is raised).

    Raises EnrollmentLocked (429, `retry_after` seconds) while the device is locked out, whatever
    the code; EnrollmentCodeInvalid (401) for a wrong code, an unknown or revoked device, or a
    device without a code; EnrollmentCodeUsed / EnrollmentCodeExpired (401) for the right code
    used already or too late.
    """
    now = now or timezone.now()
    row = _code_row(device_id)
    if row is None:
        _refuse_unknown(device_id, address)
        raise EnrollmentCodeInvalid(INVALID_CODE)
    if row.is_locked(now):
        assert row.locked_until is not None
        retry_after = max(1, int((row.locked_until - now).total_seconds()) + 1)
        # Not counted (a flood cannot extend the lockout), but audited.
        record(
            AuditAction.ENROLLMENT_CODE_REFUSED,
            address=address,
            device_id=row.device_id,
            reason=EnrollmentLocked.code,
        )
        raise EnrollmentLocked(
            "Too many failed enrolment attempts for this device; it is locked out for a while.",
            retry_after=retry_after,
        )
    # The lookup is by device; the digests are compared in constant time.
    refusal: EnrollmentError | None = None
    if not hmac.compare_digest(row.digest, code_digest(code)) or row.device.status == DeviceStatus.REVOKED:
        refusal = EnrollmentCodeInvalid(INVALID_CODE)
    elif row.used_at is not None:
        refusal = EnrollmentCodeUsed("This enrolment code was used already; ask an operator for a new one.")
    elif row.is_expired(now):
        refusal = EnrollmentCodeExpired("This enrolment code has expired; ask an operator for a new one.")
    if refusal is not None:
        _count_failure(row, refusal, address, now)
        raise refusal
    return row


def consume_enrollment_code(
    enrollment_code: EnrollmentCode, *, address: str | None = None, now: dt.datetime | None = None
) -> Device:
    """Mark a checked code used, once: of two simultaneous enrolments with it, exactly one gets
    the device and the other EnrollmentCodeUsed. Meant for the caller's own transaction, with the
    certificate the code pays for."""
    now = now or timezone.now()
    with transaction.atomic():
        taken = EnrollmentCode.objects.filter(pk=enrollment_code.pk, used_at__isnull=True).update(used_at=now)
        if not taken:
            raise EnrollmentCodeUsed("This enrolment code was used already; ask an operator for a new one.")
        record(AuditAction.ENROLLMENT_CODE_REDEEMED, address=address, device_id=enrollment_code.device_id)
    enrollment_code.used_at = now
    return enrollment_code.device


def redeem_enrollment_code(
    device_id: uuid.UUID | str, code: str, *, address: str | None = None, now: dt.datetime | None = None
) -> Device:
    """`check_enrollment_code`, then `consume_enrollment_code`: the device the code names, which
    can never be redeemed with it again."""
    return consume_enrollment_code(
        check_enrollment_code(device_id, code, address=address, now=now), address=address, now=now
    )


def _code_row(device_id: uuid.UUID | str) -> EnrollmentCode | None:
    try:
        pk = device_id if isinstance(device_id, uuid.UUID) else uuid.UUID(str(device_id))
    except ValueError:
        return None
    return EnrollmentCode.objects.select_related("device").filter(device_id=pk).first()


def _refuse_unknown(device_id: uuid.UUID | str, address: str | None) -> None:
    record(
        AuditAction.ENROLLMENT_CODE_REFUSED,
        address=address,
        reason=EnrollmentCodeInvalid.code,
        claimed_device_id=str(device_id)[:64],
    )


def _count_failure(
    row: EnrollmentCode, refusal: EnrollmentError, address: str | None, now: dt.datetime
) -> None:
    with transaction.atomic():
        # Under a row lock, so that simultaneous failures are all counted.
        locked = EnrollmentCode.objects.select_for_update().get(pk=row.pk)
        locked.failed_attempts += 1
        locked_out = locked.failed_attempts >= settings.ENROLLMENT_CODE_MAX_FAILURES
        if locked_out:
            locked.locked_until = now + dt.timedelta(minutes=settings.ENROLLMENT_CODE_LOCKOUT_MINUTES)
            locked.failed_attempts = 0
        locked.save(update_fields=["failed_attempts", "locked_until"])
        record(
            AuditAction.ENROLLMENT_CODE_REFUSED,
            address=address,
            device_id=row.device_id,
            reason=refusal.code,
            locked_out=locked_out,
        )


# --- Enrolment groups ---


def create_enrollment_group(
    *,
    name: str,
    ca_certificate: str,
    allowed_hardware_ids: Iterable[str] = (),
    enabled: bool = True,
    actor: Actor = None,
    address: str | None = None,
) -> EnrollmentGroup:
    """A new group for a manufacturer's CA. Raises InvalidCACertificate (400) for a PEM that is
    not a valid CA certificate, EnrollmentGroupExists (409) for a name or CA already in a group."""
    certificate = parse_ca_certificate(ca_certificate, timezone.now())
    group = EnrollmentGroup(
        name=name,
        ca_certificate=ca_certificate.strip() + "\n",
        ca_subject=certificate.subject.rfc4514_string(),
        ca_fingerprint=fingerprint(certificate),
        ca_not_after=certificate.not_valid_after_utc,
        allowed_hardware_ids=_distinct(allowed_hardware_ids),
        enabled=enabled,
        created_by=_user_or_none(actor),
    )
    _refuse_existing(group)
    try:
        with transaction.atomic():
            group.save(force_insert=True)
            _audit_group(AuditAction.ENROLLMENT_GROUP_CREATED, group, actor, address, enabled=group.enabled)
    except IntegrityError:
        _refuse_existing(group)  # another request made it in between
        raise
    return group


def update_enrollment_group(
    group: EnrollmentGroup,
    *,
    enabled: bool | None = None,
    allowed_hardware_ids: Iterable[str] | None = None,
    actor: Actor = None,
    address: str | None = None,
) -> EnrollmentGroup:
    """Enable or disable a group, or replace its allow-list (empty: every hardware id)."""
    changes: dict[str, Any] = {}
    if enabled is not None and enabled != group.enabled:
        changes["enabled"] = enabled
    if allowed_hardware_ids is not None:
        allowed = _distinct(allowed_hardware_ids)
        if allowed != group.allowed_hardware_ids:
            changes["allowed_hardware_ids"] = allowed
    if not changes:
        return group
    with transaction.atomic():
        for field_name, value in changes.items():
            setattr(group, field_name, value)
        group.save(update_fields=[*changes, "updated_at"])
        _audit_group(
            AuditAction.ENROLLMENT_GROUP_CHANGED,
            group,
            actor,
            address,
            **{
                field_name: (value if field_name == "enabled" else f"{len(value)} hardware ids")
                for field_name, value in changes.items()
            },
        )
    return group


def delete_enrollment_group(
    group: EnrollmentGroup, *, actor: Actor = None, address: str | None = None
) -> None:
    """Devices enrolled through the group keep their certificates; new ones can no longer enrol."""
    with transaction.atomic():
        _audit_group(AuditAction.ENROLLMENT_GROUP_DELETED, group, actor, address)
        group.delete()


def match_enrollment_group(
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    *,
    address: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[EnrollmentGroup, str]:
    """The enrolment group whose CA vouches for this factory certificate, and the hardware id
    the certificate names, if the group enrols that device now.

    Refusals, each audited: FactoryCertificateUntrusted / FactoryCertificateExpired /
    FactoryCertificateNoHardwareId (401) when no group's CA vouches for it, EnrollmentGroupDisabled
    (403), HardwareIdNotAllowed (403) when the group's allow-list leaves it out, and
    HardwareIdConflict (409 `hardware_id_exists`) when the hardware id already names a device.
    """
    now = now or timezone.now()
    group: EnrollmentGroup | None = None
    hardware_id = ""
    try:
        group, hardware_id = _vouching_group(certificate, chain, now)
        if not group.enabled:
            raise EnrollmentGroupDisabled(f"The enrolment group '{group.name}' is disabled.")
        if not group.allows(hardware_id):
            raise HardwareIdNotAllowed(
                f"The hardware id '{hardware_id}' is not on the allow-list of enrolment group '{group.name}'."
            )
        refuse_taken_hardware_id(hardware_id)
    except (EnrollmentError, HardwareIdConflict) as refusal:
        record(
            AuditAction.ENROLLMENT_REFUSED,
            address=address,
            reason=refusal.code,
            group=group.name if group else "",
            hardware_id=hardware_id,
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            serial=format(certificate.serial_number, "x"),
        )
        raise
    return group, hardware_id


def _vouching_group(
    certificate: x509.Certificate, chain: Sequence[x509.Certificate], now: dt.datetime
) -> tuple[EnrollmentGroup, str]:
    # Only groups whose CA could be on the path: the issuer of the certificate or of a chain member.
    names = {certificate.issuer.rfc4514_string()}
    names |= {member.issuer.rfc4514_string() for member in chain}
    candidates = EnrollmentGroup.objects.filter(ca_subject__in=names).order_by("-enabled", "name")
    refusals: list[EnrollmentError] = []
    for group in candidates:
        group_ca = x509.load_pem_x509_certificate(group.ca_certificate.encode())
        try:
            return group, check_factory_certificate(certificate, chain, group_ca, now)
        except EnrollmentError as refusal:
            refusals.append(refusal)
    # The most telling reason a candidate gave: expired, or no hardware id, says more than "untrusted".
    telling = [refusal for refusal in refusals if not isinstance(refusal, FactoryCertificateUntrusted)]
    if telling:
        raise telling[0]
    raise FactoryCertificateUntrusted("No enrolment group's CA vouches for this factory certificate.")


def _distinct(hardware_ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(hardware_ids))


def _refuse_existing(group: EnrollmentGroup) -> None:
    if EnrollmentGroup.objects.filter(name=group.name).exists():
        raise EnrollmentGroupExists(f"An enrolment group named '{group.name}' exists already.")
    existing = EnrollmentGroup.objects.filter(ca_fingerprint=group.ca_fingerprint).first()
    if existing is not None:
        raise EnrollmentGroupExists(
            f"This CA certificate belongs to the enrolment group '{existing.name}' already.",
            group_id=str(existing.pk),
        )


def _audit_group(
    action: AuditAction, group: EnrollmentGroup, actor: Actor, address: str | None, **detail: Any
) -> None:
    record(
        action,
        actor=actor,
        address=address,
        group=group.name,
        group_id=group.pk,
        ca_fingerprint=group.ca_fingerprint,
        **detail,
    )
