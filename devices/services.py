"""Device workflows: register, revoke, re-issue, delete.

Plain typed functions shared by the REST API, the admin, the portal pages and the CLI. Each
is all or nothing: the slow, lock-free work (RSA key generation, CSR checks) happens before
the transaction; everything that writes happens inside one.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import record
from broker.address import broker_set_up, probe_address
from broker.probe import SyncCanary, issue_sync_canary, probe_broker, probe_configured, unreachable_reason
from broker.services import (
    BrokerSyncError,
    broker_lag,
    enforce_now,
    grants_on_register,
    queue_changes,
    sync_broker,
)
from devices.delivery import (
    BundleSecrets,
    IssuedBundle,
    attach,
    create_bundle,
    open_link,
    package,
    remove_device_files,
    withdraw_links,
)
from devices.errors import (
    DeviceAlreadyRevoked,
    DeviceNotFound,
    HardwareIdConflict,
    InvalidDeviceState,
    NewCSRRequired,
)
from devices.models import Device, DeviceStatus, DownloadLink
from devices.queueing import QUEUE_ERRORS, TaskQueueUnavailable, enqueue, queue_redis
from kernel.errors import ServiceError
from kernel.locks import LockTimeout, exclusive_lock
from kernel.sealing import seal, unseal
from pki.crl import CRL_LOCK
from pki.csr import ParsedCSR, parse_csr
from pki.errors import PKIError
from pki.issuance import (
    IssuedCertificate,
    SignedCertificate,
    issue_certificate,
    record_certificate,
    sign_certificate,
)
from pki.models import Certificate, CertificateStatus
from pki.profiles import KeyType, PrivateKey, RevocationReason
from pki.revocation import revoke_certificates

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
    #: None while a worker is still provisioning the device.
    issued: IssuedCertificate | None
    bundle: IssuedBundle


@dataclass(frozen=True)
class _KeyMaterial:
    csr: ParsedCSR | None
    private_key: PrivateKey | None


def _prepare_key(csr_pem: str | None, key_type: KeyType) -> _KeyMaterial:
    """Check the CSR or generate the key before any transaction opens.

    RSA key generation is slow (docs/benchmarks.md); doing it inside a transaction would hold
    database locks (on SQLite, the whole database) for that long.
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
        return Device.objects.get_with_current_certificate(key)
    except Device.DoesNotExist:
        raise DeviceNotFound(f"No device has the id {key}.") from None


def tasks_run_in_process() -> bool:
    """True without a task queue (development, `make run`): everything happens in the request."""
    return bool(settings.CELERY_TASK_ALWAYS_EAGER)


def register_device(
    request: RegistrationRequest,
    *,
    actor: Actor = None,
    address: str | None = None,
    on_recorded: Callable[[Registration], object] | None = None,
) -> Registration:
    """Register a device, all or nothing.

    Without a task queue the device comes back active, certificate and bundle made. With
    workers it comes back pending: the request is checked and recorded here, and a worker
    signs, packages and grants (`provision_device`); the bundle password and link are
    returned at once all the same, and the link serves the bundle once it is built.

    `on_recorded` is called with the registration inside the transaction that records it, so
    what it writes (the API stores its answer to an Idempotency-Key) commits with the device
    or not at all.
    """
    if request.hardware_id:
        _refuse_taken_hardware_id(request.hardware_id)
    if not tasks_run_in_process():
        return _register_later(request, actor=actor, address=address, on_recorded=on_recorded)
    key = _prepare_key(request.csr_pem, request.key_type)
    device = _new_device(request, actor, save=False)
    device_id = device.id
    bundle_secrets = BundleSecrets.new()
    try:
        # Signed, linted and packaged before the transaction: on SQLite the write lock is then
        # held for the inserts and two file writes only, not for the cryptography.
        prepared = _prepare(device, key, bundle_secrets.password)
        with transaction.atomic():
            # Inserted active: the transaction makes the certificate, link and files all or
            # nothing with it, so there is no pending row to update (and to audit) a moment later.
            device.status = DeviceStatus.ACTIVE
            device.save(force_insert=True)
            issued = _record(device, prepared, bundle_secrets, None, actor=actor, address=address)
            if on_recorded is not None:
                on_recorded(
                    Registration(
                        device=get_device(device.id), issued=issued.certificate, bundle=issued.bundle
                    )
                )
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
        tell_broker([device.id])  # a broker with a client per device must learn of the new one
    return Registration(device=get_device(device.id), issued=issued.certificate, bundle=issued.bundle)


def _new_device(request: RegistrationRequest, actor: Actor, *, save: bool = True) -> Device:
    device = Device(
        name=request.name,
        hardware_id=request.hardware_id or None,
        metadata=request.metadata,
        created_by=_user_or_none(actor),
        status=DeviceStatus.PENDING,
        requested_key_type="" if request.csr_pem else request.key_type.value,
        csr_pem=request.csr_pem or "",
    )
    if save:
        device.save(force_insert=True)
    return device


@dataclass(frozen=True)
class _Signed:
    certificate: IssuedCertificate
    bundle: IssuedBundle


@dataclass(frozen=True)
class _Prepared:
    signed: SignedCertificate
    bundle: bytes


def _prepare(device: Device, key: _KeyMaterial, password: str) -> _Prepared:
    """The certificate, linted and signed, and the encrypted bundle: no database writes."""
    signed = sign_certificate(
        str(device.id),
        key_type=KeyType(device.requested_key_type or KeyType.RSA2048),
        csr=key.csr,
        private_key=key.private_key,
    )
    return _Prepared(signed=signed, bundle=package(device, signed.certificate, signed.private_key, password))


def _record(
    device: Device,
    prepared: _Prepared,
    bundle_secrets: BundleSecrets,
    link: DownloadLink | None,
    *,
    actor: Actor,
    address: str | None,
) -> _Signed:
    """Inside the caller's transaction: certificate row, activation, audit, then link and files.

    Without `link` the device was inserted (active) in this transaction: its link is created
    complete, with no older links to withdraw.
    """
    issued = record_certificate(prepared.signed, device_id=device.id)
    data = prepared.bundle
    if issued.certificate is not prepared.signed.certificate:
        # Signed again for a serial taken meanwhile: the bundle must carry the recorded one.
        data = package(device, issued.certificate, issued.private_key, bundle_secrets.password)
    if device.status != DeviceStatus.ACTIVE:
        _activate(device)
    record(
        AuditAction.DEVICE_REGISTERED, actor=actor, address=address, device_id=device.id,
        serial=issued.record.serial, key_type=issued.record.key_type,
    )  # fmt: skip
    if link is None:
        link = open_link(
            device, bundle_secrets.token, actor=_user_or_none(actor), bundle=(issued.record, data), first=True
        )
    else:
        attach(link, issued.record, data)
    bundle = IssuedBundle(link=link, token=bundle_secrets.token, password=bundle_secrets.password)
    return _Signed(certificate=issued, bundle=bundle)


# --- Provisioning on workers -------------------------------------------------------------

SEAL_PURPOSE = "bundle-password"


def _register_later(
    request: RegistrationRequest,
    *,
    actor: Actor,
    address: str | None,
    on_recorded: Callable[[Registration], object] | None,
) -> Registration:
    if request.csr_pem:
        parse_csr(request.csr_pem)  # a bad CSR is the caller's error, told now, not a failed device
    bundle_secrets = BundleSecrets.new()
    try:
        with transaction.atomic():
            device = _new_device(request, actor)
            link = open_link(device, bundle_secrets.token, actor=_user_or_none(actor))
            bundle = IssuedBundle(link=link, token=bundle_secrets.token, password=bundle_secrets.password)
            if on_recorded is not None:
                on_recorded(Registration(device=get_device(device.id), issued=None, bundle=bundle))
            transaction.on_commit(
                partial(_enqueue_provisioning, device, link, bundle_secrets, address, undo=_undo_registration)
            )
    except IntegrityError:
        if request.hardware_id:
            _refuse_taken_hardware_id(request.hardware_id)
        raise
    return Registration(device=get_device(device.id), issued=None, bundle=bundle)


def _enqueue_provisioning(
    device: Device,
    link: DownloadLink,
    bundle_secrets: BundleSecrets,
    address: str | None,
    *,
    undo: Callable[[Device, DownloadLink], str],
) -> None:
    """Hand the device to a worker (after commit, so the worker finds it). The message holds
    ids and the password sealed under SECRET_KEY, nothing readable. A queue that cannot be
    reached (stopped, frozen, or any failure to send) is undone by `undo`, and the caller told
    what was not done (503 task_queue_unavailable)."""
    from devices.tasks import provision_device_task  # the tasks module imports this one

    sealed = seal(SEAL_PURPOSE, str(link.pk), {"password": bundle_secrets.password, "address": address})
    enqueue(provision_device_task, args=[str(device.id), link.pk, sealed], undo=partial(undo, device, link))


def _undo_registration(device: Device, link: DownloadLink) -> str:
    """The pending device goes, with its link: its hardware id is free for the retry."""
    Device.objects.filter(pk=device.pk, status=DeviceStatus.PENDING).delete()
    remove_device_files(device.id)
    return "the device was not registered and nothing was kept"


def _undo_retry(failed_because: str) -> Callable[[Device, DownloadLink], str]:
    """The device goes back to failed, with its reason; the new link is withdrawn."""

    def undo(device: Device, link: DownloadLink) -> str:
        with transaction.atomic():
            Device.objects.filter(pk=device.pk, status=DeviceStatus.PENDING).update(
                status=DeviceStatus.FAILED, failure_reason=failed_because, updated_at=timezone.now()
            )
            DownloadLink.objects.filter(pk=link.pk).delete()
        return "the device was not retried and stays failed"

    return undo


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
        key = _prepare_key(device.csr_pem or None, KeyType(device.requested_key_type or KeyType.RSA2048))
        with transaction.atomic():
            locked = Device.objects.select_for_update().get(pk=device.pk)
            if locked.status != DeviceStatus.PENDING:
                return str(locked.status)
            link = DownloadLink.objects.select_related("device").get(pk=link_id, device=locked)
            # Signed inside, after the guard: two copies of one message never both sign.
            prepared = _prepare(locked, key, opened["password"])
            _record(
                locked,
                prepared,
                BundleSecrets(password=opened["password"], token=""),
                link,
                actor=locked.created_by,
                address=opened.get("address"),
            )
    except TRANSIENT_ERRORS:
        _forget_files(device.id)
        raise
    except ServiceError as exc:
        _forget_files(device.id)
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
        device.status = DeviceStatus.FAILED
        device.failure_reason = reason
        device.save(update_fields=["status", "failure_reason", "updated_at"])
        withdraw_links(device)
        record(AuditAction.DEVICE_PROVISIONING_FAILED, device_id=device.id, reason=reason)
    logger.warning("provisioning of %s failed: %s", device_id, reason)


def retry_provisioning(device: Device, *, actor: Actor = None, address: str | None = None) -> Registration:
    """Try a failed device again, with a new bundle password and link (the old ones are void)."""
    bundle_secrets = BundleSecrets.new()
    with transaction.atomic():
        locked = Device.objects.select_for_update().get(pk=device.pk)
        if locked.status != DeviceStatus.FAILED:
            raise InvalidDeviceState(
                f"Device {locked.id} is {locked.status}; only failed devices can be retried.",
                device_id=str(locked.id),
            )
        failed_because = locked.failure_reason
        locked.status = DeviceStatus.PENDING
        locked.failure_reason = ""
        locked.save(update_fields=["status", "failure_reason", "updated_at"])
        link = open_link(locked, bundle_secrets.token, actor=_user_or_none(actor))
        enqueue_it = partial(_enqueue_provisioning, undo=_undo_retry(failed_because))
        transaction.on_commit(partial(enqueue_it, locked, link, bundle_secrets, address))
    refreshed = get_device(device.id)
    bundle = IssuedBundle(link=link, token=bundle_secrets.token, password=bundle_secrets.password)
    return Registration(device=refreshed, issued=None, bundle=bundle)


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
    """Revoke every valid certificate of the device and publish the CRL; revoking twice is refused.

    Nothing that is only cleanup can block it: the bundle file is deleted after the commit,
    and a disk that refuses is retried by `cleanup_bundles`. The broker change is recorded in
    the same transaction (`PendingChange`), so a process that dies right after the commit
    leaves it for the catch-up (`catch_up_broker`). Revoking an already revoked device is still
    refused (409), but first pushes the broker, in case it is behind.
    """
    try:
        with exclusive_lock(CRL_LOCK), transaction.atomic():
            locked = Device.objects.select_for_update().get(pk=device.pk)
            if locked.status == DeviceStatus.REVOKED:
                raise DeviceAlreadyRevoked(
                    f"Device {locked.id} is already revoked.", device_id=str(locked.id)
                )
            # Revoked on the same CRL as the device, to learn when the broker enforces it.
            canary = issue_sync_canary() if probe_configured() and tasks_run_in_process() else None
            withdraw_links(locked)
            queue_changes([locked.id])  # the outbox, committed with the revocation or not at all
            _revoke_valid_certificates(locked, reason, also=[canary.record] if canary else [])
            locked.status = DeviceStatus.REVOKED
            locked.save(update_fields=["status", "updated_at"])
            record(
                AuditAction.DEVICE_REVOKED,
                actor=actor,
                address=address,
                device_id=locked.id,
                reason=reason.value,
            )
    except DeviceAlreadyRevoked:
        push_revocation(device.id)
        raise
    enforced_at = tell_broker([device.id], canary, queued=True)
    if enforced_at is not None:
        Device.objects.filter(pk=device.pk).update(revocation_enforced_at=enforced_at)
    return get_device(device.id)


def push_revocation(device_id: uuid.UUID) -> None:
    """Bring the broker in step for a device revoked earlier (a repeated revoke), proving the
    revocation when it is not proven yet. Failures are logged: the caller answers all the same."""
    unproven = Device.objects.filter(
        pk=device_id, status=DeviceStatus.REVOKED, revocation_enforced_at__isnull=True
    ).exists()
    if not tasks_run_in_process() or not unproven:
        tell_broker([device_id])  # with workers, the debounced sync proves it
        return
    try:
        _sync_and_prove(prove=True, devices=(str(device_id),))
    except (BrokerSyncError, LockTimeout, PKIError) as exc:
        logger.error("broker not updated for the revoked device %s: %s", device_id, exc.message)


def tell_broker(
    devices: Collection[uuid.UUID | str], canary: SyncCanary | None = None, *, queued: bool = False
) -> dt.datetime | None:
    """Push the new CRL and the changed devices' rights to the broker. The change already
    stands in the database and the CA's CRL. The devices are recorded as pending changes first
    (`PendingChange`; `queued`: the caller's transaction did), so a broker that cannot be
    reached now gets them from the next sync (the next change, `broker_sync`, the catch-up at
    start and every minute); /health reports them meanwhile.

    With workers, the push is one debounced task for a burst of changes (`request_broker_sync`).
    """
    try:
        if not queued:
            queue_changes(devices)
    except DatabaseError as exc:
        logger.error("could not record the broker change of %s: %s", list(devices), exc)
        return None
    if not tasks_run_in_process():
        if request_broker_sync():
            return None
        logger.warning("task queue unreachable: pushing to the broker from this process")
    try:
        enforced_at, _devices = enforce_now(canary, devices=())
    except (BrokerSyncError, LockTimeout) as exc:
        logger.error("broker not updated: %s", exc.message)
        return None
    return enforced_at


SYNC_PENDING_KEY = "onboarding:broker-sync-pending"


def request_broker_sync(*, countdown: float | None = None) -> bool:
    """Ask a worker to sync the pending broker changes, once for a burst. False if the queue is down.

    The first change of a burst sets a marker in Redis and enqueues one sync a moment later;
    changes that find the marker set add nothing, since that sync has not read the pending
    changes yet. The task clears the marker before it reads, so a change arriving during a
    sync queues one more: the last state always reaches the broker.
    """
    from devices.tasks import sync_broker_task  # the tasks module imports this one

    try:
        if not queue_redis().set(SYNC_PENDING_KEY, "1", nx=True, ex=settings.BROKER_SYNC_MARKER_SECONDS):
            return True
        enqueue(
            sync_broker_task,
            kwargs={"prove": True, "changes": True},
            countdown=settings.BROKER_SYNC_DEBOUNCE_SECONDS if countdown is None else countdown,
            undo=_forget_sync_marker,
        )
    except TaskQueueUnavailable as exc:
        logger.error("could not queue a broker sync: %s", exc.message)
        return False
    except QUEUE_ERRORS as exc:
        logger.error("could not queue a broker sync: %s", exc)
        return False
    return True


def _forget_sync_marker() -> str:
    """A marker whose sync was never queued would make the rest of the burst add nothing for
    BROKER_SYNC_MARKER_SECONDS: drop it, if Redis answers at all (else it expires by itself)."""
    try:
        queue_redis().delete(SYNC_PENDING_KEY)
    except QUEUE_ERRORS as exc:
        logger.warning("broker sync marker left to expire: %s", exc)
    return "no broker sync was queued"


def sync_broker_debounced(*, prove: bool, changes: bool = False) -> str:
    """The worker's side of `request_broker_sync`: clear the marker, then sync the pending
    changes (`changes`), or everything.

    With `prove` and a probe configured, a canary certificate is revoked on a new CRL first;
    once the broker refuses it, the revoked devices the sync covered (all revoked before that
    CRL, for a full sync or the ACL backend) are stamped as enforced. A sync that fails leaves
    the changes pending and asks again `BROKER_SYNC_RETRY_SECONDS` later.
    """
    if settings.CELERY_BROKER_URL:
        queue_redis().delete(SYNC_PENDING_KEY)
    try:
        return _sync_and_prove(prove=prove, devices=() if changes else None)
    except (BrokerSyncError, LockTimeout):
        if settings.CELERY_BROKER_URL:
            request_broker_sync(countdown=settings.BROKER_SYNC_RETRY_SECONDS)
        raise


#: Revoked devices not yet proven refused that one catch-up sends again, at most.
CATCH_UP_BATCH = 1000
#: Held by the one process catching the broker up; the others wait for it.
CATCH_UP_LOCK = "broker-catch-up"


def catch_up_broker(*, here: bool = True) -> str:
    """Bring the broker in step with every committed change, without a human: run at process
    start, every BROKER_CATCH_UP_SECONDS (celery beat, or the web process without workers),
    and cheap when there is nothing to do.

    Behind means: changes no sync has carried (`broker_lag`: a process killed between its commit
    and its push), a broker CRL that is not the CA's, or (with a probe) revoked devices whose
    refusal was never proven (a probe that was misconfigured then). Those are synced and proven
    with a canary, here or (`here` false: a process without the CA key) by a worker. One
    process at a time: the others wait for the lock, then find nothing left to do.
    """
    if not broker_set_up():
        return "no broker set up"  # a fresh install: nothing to catch up with, and no files to write
    with exclusive_lock(CATCH_UP_LOCK):
        lag = broker_lag()
        unproven = (
            list(
                Device.objects.filter(status=DeviceStatus.REVOKED, revocation_enforced_at__isnull=True)
                .order_by("updated_at")
                .values_list("pk", flat=True)[:CATCH_UP_BATCH]
            )
            if probe_configured()
            else []
        )
        if not lag and not unproven:
            return "in step"
        if not lag and not probe_broker().canary_refused:
            # Only the proof is missing and the probe cannot get it (unreachable, or a broker
            # that lets the canary in, which /health reports): a new canary would prove nothing.
            return "unproven"
        logger.warning(
            "the broker is behind (%s): bringing it in step",
            "; ".join(lag + ([f"{len(unproven)} revocation(s) not proven"] if unproven else [])),
        )
        queue_changes(unproven)  # the dynamic-security backend syncs the devices it is told of
        if not here:
            return "requested" if request_broker_sync(countdown=0) else "queue unreachable"
        return _sync_and_prove(prove=True, devices=())


def _sync_and_prove(*, prove: bool, devices: tuple[str, ...] | None) -> str:
    if not (prove and probe_configured()) or unreachable_reason(probe_address()) is not None:
        # No proof to be had from a broker nothing answers for: a canary would only add a
        # revoked certificate and a CRL signature (every minute, from the catch-up) for nothing.
        return sync_broker(devices=devices).acl_sha256
    cutoff = timezone.now()  # revocations committed before this are on the canary's CRL
    canary = issue_sync_canary()
    revoke_certificates([canary.record], RevocationReason.UNSPECIFIED)
    enforced_at, covered = enforce_now(canary, devices=devices)
    if enforced_at is None:
        return "synced"
    revoked = Device.objects.filter(
        status=DeviceStatus.REVOKED, revocation_enforced_at__isnull=True, updated_at__lt=cutoff
    )
    if covered is None:
        revoked.update(revocation_enforced_at=enforced_at)
    else:  # a live session ends with its device's own commands: only those the sync sent
        for start in range(0, len(covered), 500):
            revoked.filter(pk__in=covered[start : start + 500]).update(revocation_enforced_at=enforced_at)
    return "enforced"


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
        return create_bundle(device, current, None, actor=_user_or_none(actor))


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
