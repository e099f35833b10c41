"""Device workflows: register, revoke, re-issue, delete.

Plain typed functions shared by the REST API, the admin, the portal pages and the CLI. Each
is all or nothing: the slow, lock-free work (RSA key generation, CSR checks) happens before
the transaction; everything that writes happens inside one.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import IntegrityError, transaction

from audit.models import AuditAction
from audit.services import record
from broker.probe import SyncCanary, issue_sync_canary, probe_configured
from broker.services import BrokerSyncError, enforce_now, grants_on_register
from devices.delivery import IssuedBundle, create_bundle, remove_device_files, withdraw_links
from devices.errors import (
    DeviceAlreadyRevoked,
    DeviceNotFound,
    HardwareIdConflict,
    InvalidDeviceState,
    NewCSRRequired,
)
from devices.models import Device, DeviceStatus
from onboarding.locks import exclusive_lock
from pki.models import Certificate, CertificateStatus
from pki.profiles import KeyType, ParsedCSR, PrivateKey, RevocationReason, parse_csr
from pki.services import IssuedCertificate, issue_certificate, revoke_certificates

Actor = AbstractBaseUser | AnonymousUser | None
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationRequest:
    name: str
    hardware_id: str | None = None
    csr_pem: str | None = None
    key_type: KeyType = KeyType.RSA2048
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    device: Device
    issued: IssuedCertificate
    bundle: IssuedBundle


@dataclass(frozen=True)
class _KeyMaterial:
    csr: ParsedCSR | None
    private_key: PrivateKey | None


def _prepare_key(csr_pem: str | None, key_type: KeyType) -> _KeyMaterial:
    """Check the CSR or generate the key before any transaction opens.

    RSA key generation takes 50-200 ms; doing it inside a transaction would hold database
    locks (on SQLite, the whole database) for that long.
    """
    if csr_pem:
        return _KeyMaterial(csr=parse_csr(csr_pem), private_key=None)
    return _KeyMaterial(csr=None, private_key=key_type.generate())


def _user_or_none(actor: Actor) -> User | None:
    return actor if isinstance(actor, User) else None


def get_device(device_id: str | uuid.UUID) -> Device:
    """The device with this id, or DeviceNotFound (also for ids that are not UUIDs)."""
    try:
        key = device_id if isinstance(device_id, uuid.UUID) else uuid.UUID(str(device_id))
    except ValueError:
        raise DeviceNotFound(f"No device has the id '{device_id}': device ids are UUIDs.") from None
    try:
        return Device.objects.with_certificates().get(pk=key)
    except Device.DoesNotExist:
        raise DeviceNotFound(f"No device has the id {key}.") from None


def register_device(
    request: RegistrationRequest, *, actor: Actor = None, address: str | None = None
) -> Registration:
    """Create the device, its certificate and its broker rights, or nothing at all."""
    if request.hardware_id:
        _refuse_taken_hardware_id(request.hardware_id)
    key = _prepare_key(request.csr_pem, request.key_type)
    device_id = None
    try:
        with transaction.atomic():
            device = Device.objects.create(
                name=request.name,
                hardware_id=request.hardware_id or None,
                metadata=request.metadata,
                created_by=_user_or_none(actor),
                status=DeviceStatus.PENDING,
            )
            device_id = device.id
            issued = issue_certificate(
                str(device.id),
                key_type=request.key_type,
                csr=key.csr,
                private_key=key.private_key,
                device_id=device.id,
            )
            _activate(device)
            bundle = create_bundle(device, issued.record, issued.private_key, actor=_user_or_none(actor))
            record(
                AuditAction.DEVICE_REGISTERED, actor=actor, address=address, device_id=device.id,
                serial=issued.record.serial, key_type=issued.record.key_type,
            )  # fmt: skip
    except IntegrityError:
        _forget_files(device_id)
        # Two registrations raced for the same hardware id; the database let one win.
        if request.hardware_id:
            _refuse_taken_hardware_id(request.hardware_id)
        raise
    except BaseException:
        _forget_files(device_id)
        raise
    if grants_on_register():
        _tell_broker()  # a broker with a client per device must learn of the new one
    return Registration(device=get_device(device.id), issued=issued, bundle=bundle)


def _forget_files(device_id: uuid.UUID | None) -> None:
    if device_id is not None:
        remove_device_files(device_id)


def _refuse_taken_hardware_id(hardware_id: str) -> None:
    existing = Device.objects.filter(hardware_id=hardware_id).values_list("pk", flat=True).first()
    if existing is not None:
        raise HardwareIdConflict(
            f"A device with hardware id '{hardware_id}' is already registered ({existing}).",
            device_id=str(existing),
        )


def _activate(device: Device) -> None:
    """The last step of registration: the device becomes active and holds its broker rights.

    The default rights (`devices/{id}/#`) follow from the active certificate alone, so there is
    nothing more to write here until a device has rules of its own.
    """
    device.status = DeviceStatus.ACTIVE
    device.failure_reason = ""
    device.save(update_fields=["status", "failure_reason", "updated_at"])


def revoke_device(
    device: Device,
    reason: RevocationReason = RevocationReason.UNSPECIFIED,
    *,
    actor: Actor = None,
    address: str | None = None,
) -> Device:
    """Revoke every valid certificate of the device and publish the CRL; revoking twice is refused."""
    with exclusive_lock("crl"), transaction.atomic():
        locked = Device.objects.select_for_update().get(pk=device.pk)
        if locked.status == DeviceStatus.REVOKED:
            raise DeviceAlreadyRevoked(f"Device {locked.id} is already revoked.", device_id=str(locked.id))
        # Revoked on the same CRL as the device, to learn when the broker enforces it.
        canary = issue_sync_canary() if probe_configured() else None
        withdraw_links(locked)
        _revoke_valid_certificates(locked, reason, also=[canary.record] if canary else [])
        locked.status = DeviceStatus.REVOKED
        locked.save(update_fields=["status", "updated_at"])
        record(
            AuditAction.DEVICE_REVOKED, actor=actor, address=address, device_id=locked.id, reason=reason.value
        )
    enforced_at = _tell_broker(canary)
    if enforced_at is not None:
        Device.objects.filter(pk=device.pk).update(revocation_enforced_at=enforced_at)
    return get_device(device.id)


def _tell_broker(canary: SyncCanary | None = None) -> dt.datetime | None:
    """Push the new CRL and rights to the broker. The revocation already stands in the database
    and the CA's CRL; a broker that cannot be reached now is brought in step by the next sync
    (`broker_sync`, the scheduler), and /health reports the drift meanwhile."""
    try:
        return enforce_now(canary)
    except BrokerSyncError as exc:
        logger.error("broker not updated: %s", exc.message)
        return None


def _revoke_valid_certificates(
    device: Device, reason: RevocationReason, also: list[Certificate] | None = None
) -> None:
    valid = list(Certificate.objects.filter(device=device, status=CertificateStatus.ACTIVE))
    if valid or also:
        revoke_certificates([*valid, *(also or [])], reason)


def reissue_device(
    device: Device,
    *,
    key_type: KeyType | None = None,
    csr_pem: str | None = None,
    actor: Actor = None,
    address: str | None = None,
) -> Registration:
    """Rotate: a new key and certificate for the same device id; the old one is superseded.

    Broker rights are keyed on the device id, so they do not change.
    """
    if device.status != DeviceStatus.ACTIVE:
        raise InvalidDeviceState(
            f"Device {device.id} is {device.status}; only active devices can be re-issued.",
            device_id=str(device.id),
        )
    current = device.current_certificate
    if current is not None and current.from_csr and not csr_pem:
        raise NewCSRRequired(
            f"Device {device.id} holds its own private key: send a new CSR to re-issue its certificate."
        )
    chosen_type = key_type or (KeyType(current.key_type) if current else KeyType.RSA2048)
    key = _prepare_key(csr_pem, chosen_type)
    with exclusive_lock("crl"), transaction.atomic():
        locked = Device.objects.select_for_update().get(pk=device.pk)
        if locked.status != DeviceStatus.ACTIVE:
            raise InvalidDeviceState(f"Device {locked.id} is {locked.status}; it cannot be re-issued.")
        issued = issue_certificate(
            str(locked.id),
            key_type=chosen_type,
            csr=key.csr,
            private_key=key.private_key,
            device_id=locked.id,
        )
        superseded = list(
            Certificate.objects.filter(device=locked, status=CertificateStatus.ACTIVE).exclude(
                pk=issued.record.pk
            )
        )
        locked.save(update_fields=["updated_at"])
        bundle = create_bundle(locked, issued.record, issued.private_key, actor=_user_or_none(actor))
        # Last, because it writes crl.pem before the commit: a step that fails after it would
        # leave a CRL revoking what the rolled-back database still calls active.
        record(
            AuditAction.DEVICE_REISSUED,
            actor=actor,
            address=address,
            device_id=locked.id,
            serial=issued.record.serial,
        )
        if superseded:
            revoke_certificates(superseded, RevocationReason.SUPERSEDED)
    _tell_broker()  # the superseded certificate is on the CRL: the broker must refuse it too
    return Registration(device=get_device(device.id), issued=issued, bundle=bundle)


def issue_new_bundle(device: Device, *, actor: Actor = None, address: str | None = None) -> IssuedBundle:
    """A fresh bundle and link. The server keeps no device key, so for a server-generated key
    this is a rotation (new key and certificate, the old one superseded); for a device that
    made its own key, the same certificate in a new bundle."""
    current = device.current_certificate
    if device.status != DeviceStatus.ACTIVE or current is None:
        raise InvalidDeviceState(
            f"Device {device.id} is {device.status}; only active devices get new bundles.",
            device_id=str(device.id),
        )
    if not current.from_csr:
        return reissue_device(device, actor=actor, address=address).bundle
    with transaction.atomic():
        record(
            AuditAction.BUNDLE_ISSUED,
            actor=actor,
            address=address,
            device_id=device.id,
            serial=current.serial,
        )
        return create_bundle(device, current, None, actor=_user_or_none(actor))


def delete_device(device: Device, *, actor: Actor = None, address: str | None = None) -> None:
    """Delete the device; a still-valid certificate is revoked (cessationOfOperation), never lost.

    The certificate rows stay, detached, so the CRL keeps listing them until they expire.
    """
    with exclusive_lock("crl"), transaction.atomic():
        locked = Device.objects.select_for_update().get(pk=device.pk)
        _revoke_valid_certificates(locked, RevocationReason.CESSATION_OF_OPERATION)
        record(
            AuditAction.DEVICE_DELETED, actor=actor, address=address, device_id=locked.id, name=locked.name
        )
        locked.delete()
    remove_device_files(device.id)
    _tell_broker()
