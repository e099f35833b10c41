"""Provisioning on workers: the worker's half of a registration, a failure an operator can act
on, and the retry of a failed device."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import partial

from django.db import DatabaseError, transaction

from broker.dispatch import grants_on_register, tell_broker
from devices.delivery import BundleSecrets, IssuedBundle, open_link, withdraw_links
from devices.lifecycle import get_device, lock_in_status
from devices.models import Device, DeviceStatus, DownloadLink
from devices.registration import (
    SEAL_PURPOSE,
    Actor,
    Registration,
    enqueue_provisioning,
    forget_files,
    prepare_credentials,
    prepare_key,
    record_credentials,
    user_or_none,
)
from kernel.errors import ServiceError
from kernel.sealing import unseal
from pki.profiles import KeyType

logger = logging.getLogger(__name__)

#: Failures worth another attempt: the database or the disk may be back in a moment.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (DatabaseError, OSError)


def provision_device(device_id: str, link_id: int, sealed: str) -> str:
    """The worker's half of registration; safe to run twice for one device.

    A retried or duplicated message finds the device no longer pending (checked again under
    `select_for_update`) and signs nothing. Errors the operator must fix (no CA, a certificate
    that fails lint, a broken seal) mark the device failed with the reason; transient errors
    (database, disk) propagate for the task to retry.
    """
    device = Device.objects.filter(pk=device_id).first()
    if device is None or device.status != DeviceStatus.PENDING:
        return device.status if device else "missing"
    try:
        opened = unseal(SEAL_PURPOSE, str(link_id), sealed)
        key = prepare_key(device.csr_pem or None, KeyType(device.requested_key_type or KeyType.RSA2048))
        with transaction.atomic():
            locked = Device.objects.select_for_update().get(pk=device.pk)
            if locked.status != DeviceStatus.PENDING:
                return str(locked.status)
            link = DownloadLink.objects.select_related("device").get(pk=link_id, device=locked)
            # Signed inside, after the guard: two copies of one message never both sign.
            prepared = prepare_credentials(locked, key, opened["password"])
            record_credentials(
                locked,
                prepared,
                BundleSecrets(password=opened["password"], token=""),
                link,
                actor=locked.created_by,
                address=opened.get("address"),
            )
    except TRANSIENT_ERRORS:
        forget_files(device.id)
        raise
    except ServiceError as exc:
        forget_files(device.id)
        mark_provisioning_failed(device.id, exc.message)
        return DeviceStatus.FAILED.value
    if grants_on_register():
        tell_broker([device.id])
    return DeviceStatus.ACTIVE.value


def mark_provisioning_failed(device_id: str | uuid.UUID, reason: str) -> None:
    """A pending device that could not be provisioned: failed, with a reason an operator can
    act on, and its link withdrawn. `retry_provisioning` tries again."""
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(pk=device_id).first()
        if device is None or device.status != DeviceStatus.PENDING:
            return
        device.mark_failed(reason)
        withdraw_links(device)
    logger.warning("provisioning of %s failed: %s", device_id, reason)


def retry_provisioning(device: Device, *, actor: Actor = None, address: str | None = None) -> Registration:
    """Try a failed device again, with a new bundle password and link (the old ones are void)."""
    bundle_secrets = BundleSecrets.new()
    with transaction.atomic():
        locked = lock_in_status(device, DeviceStatus.FAILED, "only failed devices can be retried")
        failed_because = locked.failure_reason
        locked.mark_pending()
        link = open_link(locked, bundle_secrets.token, actor=user_or_none(actor))
        enqueue_it = partial(enqueue_provisioning, undo=_undo_retry(failed_because))
        transaction.on_commit(partial(enqueue_it, locked, link, bundle_secrets, address))
    refreshed = get_device(device.id)
    bundle = IssuedBundle(link=link, token=bundle_secrets.token, password=bundle_secrets.password)
    return Registration(device=refreshed, issued=None, bundle=bundle)


def _undo_retry(failed_because: str) -> Callable[[Device, DownloadLink], str]:
    """The device goes back to failed, with its reason; the new link is withdrawn."""

    def undo(device: Device, link: DownloadLink) -> str:
        with transaction.atomic():
            Device.objects.filter(pk=device.pk).return_to_failed(failed_because)
            DownloadLink.objects.filter(pk=link.pk).delete()
        return "the device was not retried and stays failed"

    return undo
