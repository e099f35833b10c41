"""A registered device's life: look it up, revoke it, re-issue its certificate, give it a new
bundle, delete it. Each change is all or nothing, and the broker is told after the commit
(`broker.dispatch`), the change recorded for it in the same transaction."""

from __future__ import annotations

import uuid

from django.db import transaction

from audit.models import AuditAction
from audit.services import record
from broker.dispatch import push_revocation, queue_changes, revocation_canary, tell_broker
from devices.delivery import IssuedBundle, create_bundle, remove_device_files, withdraw_links
from devices.errors import DeviceAlreadyRevoked, DeviceNotFound, InvalidDeviceState, NewCSRRequired
from devices.models import Device, DeviceStatus
from devices.registration import Actor, Registration, prepare_key, user_or_none
from kernel.locks import exclusive_lock
from pki.crl import CRL_LOCK
from pki.issuance import issue_certificate
from pki.models import Certificate, CertificateStatus
from pki.profiles import KeyType, RevocationReason
from pki.revocation import revoke_certificates


def get_device(device_id: str | uuid.UUID) -> Device:
    """The device with this id, or DeviceNotFound (also for ids that are not UUIDs)."""
    try:
        key = device_id if isinstance(device_id, uuid.UUID) else uuid.UUID(str(device_id))
    except ValueError:
        raise DeviceNotFound(f"No device has the id '{device_id}': device ids are UUIDs.") from None
    try:
        return Device.objects.get_with_current_certificate(key)
    except Device.DoesNotExist:
        raise DeviceNotFound(f"No device has the id {key}.") from None


def lock_in_status(device: Device, status: DeviceStatus, refusal: str) -> Device:
    """The device's row, locked until the surrounding transaction ends, or InvalidDeviceState if it
    is not in `status`; `refusal` ends the sentence ("only failed devices can be retried")."""
    locked = Device.objects.select_for_update().get(pk=device.pk)
    if locked.status != status:
        raise InvalidDeviceState(
            f"Device {locked.id} is {locked.status}; {refusal}.", device_id=str(locked.id)
        )
    return locked


def revoke_device(
    device: Device,
    reason: RevocationReason = RevocationReason.UNSPECIFIED,
    *,
    actor: Actor = None,
    address: str | None = None,
) -> Device:
    """Revoke every valid certificate of the device and publish the CRL; revoking twice is refused.

    Nothing that is only cleanup can block it: the bundle file is deleted after the commit,
    and a disk that refuses is retried by `cleanup_bundles`. The broker change is recorded in
    the same transaction (`PendingChange`), so a process that dies right after the commit
    leaves it for the catch-up (`broker.dispatch.catch_up_broker`). Revoking an already revoked
    device is still refused (409), but first pushes the broker, in case it is behind.
    """
    try:
        with exclusive_lock(CRL_LOCK), transaction.atomic():
            locked = Device.objects.select_for_update().get(pk=device.pk)
            if locked.status == DeviceStatus.REVOKED:
                raise DeviceAlreadyRevoked(
                    f"Device {locked.id} is already revoked.", device_id=str(locked.id)
                )
            # Revoked on the same CRL as the device, to learn when the broker enforces it.
            canary = revocation_canary()
            withdraw_links(locked)
            queue_changes([locked.id])  # the outbox, committed with the revocation or not at all
            _revoke_valid_certificates(locked, reason, also=[canary.record] if canary else [])
            locked.revoke(reason, actor=actor, address=address)
    except DeviceAlreadyRevoked:
        push_revocation(device.id)
        raise
    enforced_at = tell_broker([device.id], canary, queued=True)
    if enforced_at is not None:
        Device.objects.filter(pk=device.pk).update(revocation_enforced_at=enforced_at)
    return get_device(device.id)


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
    key = prepare_key(csr_pem, chosen_type)
    with exclusive_lock(CRL_LOCK), transaction.atomic():
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
        queue_changes([locked.id])  # with the change, so a crash after the commit leaves it for the catch-up
        bundle = create_bundle(locked, issued.record, issued.private_key, actor=user_or_none(actor))
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
    # The superseded certificate is on the CRL: the broker must refuse it too.
    tell_broker([device.id], queued=True)
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
        return create_bundle(device, current, None, actor=user_or_none(actor))


def delete_device(device: Device, *, actor: Actor = None, address: str | None = None) -> None:
    """Delete the device; a still-valid certificate is revoked (cessationOfOperation), never lost.

    The certificate rows stay, detached, so the CRL keeps listing them until they expire.
    """
    with exclusive_lock(CRL_LOCK), transaction.atomic():
        locked = Device.objects.select_for_update().get(pk=device.pk)
        queue_changes([locked.id])  # with the change, so a crash after the commit leaves it for the catch-up
        _revoke_valid_certificates(locked, RevocationReason.CESSATION_OF_OPERATION)
        record(
            AuditAction.DEVICE_DELETED, actor=actor, address=address, device_id=locked.id, name=locked.name
        )
        locked.delete()
    remove_device_files(device.id)
    tell_broker([device.id], queued=True)
