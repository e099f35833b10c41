"""Registering a device, all or nothing: in the request without a task queue, else recorded
here and provisioned by a worker (devices.provisioning).

The slow, lock-free work (RSA key generation, CSR checks) happens before the transaction;
everything that writes happens inside one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import IntegrityError, transaction

from broker.dispatch import grants_on_register, tell_broker
from devices.delivery import (
    BundleSecrets,
    IssuedBundle,
    attach,
    open_link,
    package,
    remove_device_files,
)
from devices.errors import HardwareIdConflict
from devices.models import Device, DeviceStatus, DownloadLink
from kernel.sealing import seal
from kernel.tasks import run_task, tasks_run_in_process
from pki.csr import ParsedCSR, parse_csr
from pki.issuance import IssuedCertificate, SignedCertificate, record_certificate, sign_certificate
from pki.profiles import KeyType, PrivateKey

Actor = AbstractBaseUser | AnonymousUser | None

#: The task that provisions a pending device (devices.tasks), sent by name.
PROVISION_TASK = "onboarding.provision_device"
SEAL_PURPOSE = "bundle-password"


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
class KeyMaterial:
    csr: ParsedCSR | None
    private_key: PrivateKey | None


def prepare_key(csr_pem: str | None, key_type: KeyType) -> KeyMaterial:
    """Check the CSR or generate the key before any transaction opens.

    RSA key generation is slow (docs/benchmarks.md); doing it inside a transaction would hold
    database locks (on SQLite, the whole database) for that long.
    """
    if csr_pem:
        return KeyMaterial(csr=parse_csr(csr_pem), private_key=None)
    return KeyMaterial(csr=None, private_key=key_type.generate())


def user_or_none(actor: Actor) -> User | None:
    return actor if isinstance(actor, User) else None


def _as_recorded(device_id: uuid.UUID) -> Device:
    """The device just recorded by this registration, with its newest certificate."""
    return Device.objects.get_with_current_certificate(device_id)


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
    signs, packages and grants (`devices.provisioning.provision_device`); the bundle password
    and link are returned at once all the same, and the link serves the bundle once it is built.

    `on_recorded` is called with the registration inside the transaction that records it, so
    what it writes (the API stores its answer to an Idempotency-Key) commits with the device
    or not at all.
    """
    if request.hardware_id:
        refuse_taken_hardware_id(request.hardware_id)
    if not tasks_run_in_process():
        return _register_later(request, actor=actor, address=address, on_recorded=on_recorded)
    key = prepare_key(request.csr_pem, request.key_type)
    # Inserted active: the transaction makes the certificate, link and files all or nothing
    # with it, so there is no pending row to update (and to audit) a moment later.
    device = _new_device(request, actor, status=DeviceStatus.ACTIVE, save=False)
    device_id = device.id
    bundle_secrets = BundleSecrets.new()
    try:
        # Signed, linted and packaged before the transaction: on SQLite the write lock is then
        # held for the inserts and two file writes only, not for the cryptography.
        prepared = prepare_credentials(device, key, bundle_secrets.password)
        with transaction.atomic():
            device.save(force_insert=True)
            issued = record_credentials(device, prepared, bundle_secrets, None, actor=actor, address=address)
            if on_recorded is not None:
                on_recorded(
                    Registration(
                        device=_as_recorded(device.id), issued=issued.certificate, bundle=issued.bundle
                    )
                )
    except IntegrityError:
        forget_files(device_id)
        # Two registrations raced for the same hardware id; the database let one win.
        if request.hardware_id:
            refuse_taken_hardware_id(request.hardware_id)
        raise
    except BaseException:
        forget_files(device_id)
        raise
    if grants_on_register():
        tell_broker([device.id])  # a broker with a client per device must learn of the new one
    return Registration(device=_as_recorded(device.id), issued=issued.certificate, bundle=issued.bundle)


def _new_device(
    request: RegistrationRequest,
    actor: Actor,
    *,
    status: DeviceStatus = DeviceStatus.PENDING,
    save: bool = True,
) -> Device:
    device = Device(
        name=request.name,
        hardware_id=request.hardware_id or None,
        metadata=request.metadata,
        created_by=user_or_none(actor),
        status=status,
        requested_key_type="" if request.csr_pem else request.key_type.value,
        csr_pem=request.csr_pem or "",
    )
    if save:
        device.save(force_insert=True)
    return device


@dataclass(frozen=True)
class Signed:
    certificate: IssuedCertificate
    bundle: IssuedBundle


@dataclass(frozen=True)
class Prepared:
    signed: SignedCertificate
    bundle: bytes


def prepare_credentials(device: Device, key: KeyMaterial, password: str) -> Prepared:
    """The certificate, linted and signed, and the encrypted bundle: no database writes."""
    signed = sign_certificate(
        str(device.id),
        key_type=KeyType(device.requested_key_type or KeyType.RSA2048),
        csr=key.csr,
        private_key=key.private_key,
    )
    return Prepared(signed=signed, bundle=package(device, signed.certificate, signed.private_key, password))


def record_credentials(
    device: Device,
    prepared: Prepared,
    bundle_secrets: BundleSecrets,
    link: DownloadLink | None,
    *,
    actor: Actor,
    address: str | None,
) -> Signed:
    """Inside the caller's transaction: certificate row, activation and its audit, then link and files.

    Without `link` the device was inserted (active) in this transaction: its link is created
    complete, with no older links to withdraw.
    """
    issued = record_certificate(prepared.signed, device_id=device.id)
    data = prepared.bundle
    if issued.certificate is not prepared.signed.certificate:
        # Signed again for a serial taken meanwhile: the bundle must carry the recorded one.
        data = package(device, issued.certificate, issued.private_key, bundle_secrets.password)
    device.activate(issued.record, actor=actor, address=address)
    if link is None:
        link = open_link(
            device, bundle_secrets.token, actor=user_or_none(actor), bundle=(issued.record, data), first=True
        )
    else:
        attach(link, issued.record, data)
    bundle = IssuedBundle(link=link, token=bundle_secrets.token, password=bundle_secrets.password)
    return Signed(certificate=issued, bundle=bundle)


# --- Registration on workers -------------------------------------------------------------


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
            link = open_link(device, bundle_secrets.token, actor=user_or_none(actor))
            bundle = IssuedBundle(link=link, token=bundle_secrets.token, password=bundle_secrets.password)
            if on_recorded is not None:
                on_recorded(Registration(device=_as_recorded(device.id), issued=None, bundle=bundle))
            transaction.on_commit(
                partial(enqueue_provisioning, device, link, bundle_secrets, address, undo=_undo_registration)
            )
    except IntegrityError:
        if request.hardware_id:
            refuse_taken_hardware_id(request.hardware_id)
        raise
    return Registration(device=_as_recorded(device.id), issued=None, bundle=bundle)


def enqueue_provisioning(
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
    sealed = seal(SEAL_PURPOSE, str(link.pk), {"password": bundle_secrets.password, "address": address})
    run_task(PROVISION_TASK, args=[str(device.id), link.pk, sealed], undo=partial(undo, device, link))


def _undo_registration(device: Device, link: DownloadLink) -> str:
    """The pending device goes, with its link: its hardware id is free for the retry."""
    Device.objects.filter(pk=device.pk, status=DeviceStatus.PENDING).delete()
    remove_device_files(device.id)
    return "the device was not registered and nothing was kept"


def forget_files(device_id: uuid.UUID | None) -> None:
    if device_id is not None:
        remove_device_files(device_id)


def refuse_taken_hardware_id(hardware_id: str) -> None:
    existing = Device.objects.filter(hardware_id=hardware_id).values_list("pk", flat=True).first()
    if existing is not None:
        raise HardwareIdConflict(
            f"A device with hardware id '{hardware_id}' is already registered ({existing}).",
            device_id=str(existing),
        )
