"""EST enrolment (RFC 7030 4.2.1 simpleenroll) as workflows: a device registered for EST delivery
gets a one-time code instead of a ZIP, and later enrols with it; a device with a factory
certificate from an enrolment group's CA is registered and enrolled in one step (zero-touch).

The server takes only the public key from the device's CSR: the subject (CN = device id) and the
extensions are the CA's, as for every registration (pki.issuance). Refusals that count (a wrong
code, an untrusted factory certificate) are recorded by enrollment.services in transactions of
their own, before the certificate's transaction opens.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from django.db import IntegrityError, transaction

from audit.models import AuditAction
from audit.services import record
from broker.dispatch import grants_on_register, tell_broker
from devices.errors import DeviceError
from devices.models import Device, DeviceStatus
from devices.registration import Actor, RegistrationRequest, refuse_taken_hardware_id, user_or_none
from enrollment.models import EnrollmentCode
from enrollment.services import (
    check_enrollment_code,
    consume_enrollment_code,
    issue_enrollment_code,
    match_enrollment_group,
)
from onboard_cli import text_rules, vocabulary
from pki.csr import ParsedCSR
from pki.issuance import IssuedCertificate, record_certificate, sign_certificate

# The `method` of a `device.enrolled` audit event.
BY_CODE = "enrollment_code"
BY_FACTORY_CERTIFICATE = "factory_certificate"


class DeviceNotAwaitingEnrollment(DeviceError):
    """The code is right but the device has its certificate already (or is being provisioned)."""

    code = "device_not_awaiting_enrollment"
    status = 409


@dataclass(frozen=True)
class AwaitingEnrollment:
    """A device registered for EST delivery, and its enrolment code (shown this once)."""

    device: Device
    enrollment_code: str
    enrollment_code_expires_at: dt.datetime


@dataclass(frozen=True)
class Enrolled:
    device: Device
    issued: IssuedCertificate


def register_for_enrollment(
    request: RegistrationRequest,
    *,
    actor: Actor = None,
    address: str | None = None,
    on_recorded: Callable[[AwaitingEnrollment], object] | None = None,
) -> AwaitingEnrollment:
    """Register a device that will enrol itself over EST: `awaiting_enrollment`, no key, no
    certificate, no bundle and no broker rights until it does; its enrolment code comes back
    once. A CSR or key type in `request` is not used: the device brings its key when it enrols.

    `on_recorded` is called inside the transaction that records the device (the API keeps its
    answer to an Idempotency-Key there)."""
    if request.hardware_id:
        refuse_taken_hardware_id(request.hardware_id)
    try:
        with transaction.atomic():
            device = Device.objects.create(
                name=request.name,
                hardware_id=request.hardware_id or None,
                metadata=request.metadata,
                created_by=user_or_none(actor),
                status=DeviceStatus.AWAITING_ENROLLMENT,
            )
            # Audited as a registration (who, from where) without a serial: there is no
            # certificate until the device enrols (`device.enrolled`).
            record(
                AuditAction.DEVICE_REGISTERED,
                actor=actor,
                address=address,
                device_id=device.id,
                delivery=vocabulary.DELIVERY_EST,
            )
            code = issue_enrollment_code(device, actor=actor, address=address)
            expires_at = EnrollmentCode.objects.values_list("expires_at", flat=True).get(device=device)
            awaiting = AwaitingEnrollment(
                device=Device.objects.get_with_current_certificate(device.id),
                enrollment_code=code,
                enrollment_code_expires_at=expires_at,
            )
            if on_recorded is not None:
                on_recorded(awaiting)
    except IntegrityError:
        if request.hardware_id:
            refuse_taken_hardware_id(request.hardware_id)  # a simultaneous registration won
        raise
    return awaiting


def enroll_with_code(
    device_id: uuid.UUID | str, code: str, csr: ParsedCSR, *, address: str | None = None
) -> Enrolled:
    """The certificate of a device awaiting enrolment, paid for with its code.

    The code is checked before anything is signed (a wrong one counts toward the lockout) and
    used up in the transaction that records the certificate: a failure in between leaves it
    usable. Raises the refusals of `check_enrollment_code` and `consume_enrollment_code`, and
    DeviceNotAwaitingEnrollment (409) for a device that has its certificate already.
    """
    enrollment_code = check_enrollment_code(device_id, code, address=address)
    device = enrollment_code.device
    if device.status != DeviceStatus.AWAITING_ENROLLMENT:
        raise DeviceNotAwaitingEnrollment(
            f"Device {device.id} is {device.status}, not awaiting enrolment.", device_id=str(device.id)
        )
    signed = sign_certificate(str(device.id), csr=csr)
    with transaction.atomic():
        locked = Device.objects.select_for_update().get(pk=device.pk)
        if locked.status != DeviceStatus.AWAITING_ENROLLMENT:  # revoked meanwhile
            raise DeviceNotAwaitingEnrollment(
                f"Device {locked.id} is {locked.status}, not awaiting enrolment.", device_id=str(locked.id)
            )
        consume_enrollment_code(enrollment_code, address=address)
        issued = record_certificate(signed, device_id=locked.id)
        locked.activate(issued.record, address=address, enrolled_by=BY_CODE)
    return _granted(locked, issued)


def enroll_with_factory_certificate(
    factory_certificate: x509.Certificate,
    csr: ParsedCSR,
    *,
    chain: tuple[x509.Certificate, ...] = (),
    address: str | None = None,
) -> Enrolled:
    """Zero-touch: the factory certificate's enrolment group vouches for it, so the device is
    registered (hardware id from the certificate, name from the group) and enrolled at once.

    Raises the refusals of `match_enrollment_group` (401 untrusted or expired, 403 disabled
    group or hardware id not allowed, 409 hardware id taken), each audited there.
    """
    group, hardware_id = match_enrollment_group(factory_certificate, chain, address=address)
    device_id = uuid.uuid4()
    signed = sign_certificate(str(device_id), csr=csr)
    name = f"{group.name} {hardware_id}"[: text_rules.MAX_LENGTH].strip()
    try:
        with transaction.atomic():
            device = Device.objects.create(
                id=device_id,
                name=name,
                hardware_id=hardware_id,
                metadata={"enrollment_group": group.name},
                status=DeviceStatus.ACTIVE,
            )
            issued = record_certificate(signed, device_id=device.id)
            device.activate(
                issued.record,
                address=address,
                enrolled_by=BY_FACTORY_CERTIFICATE,
                group=group.name,
                hardware_id=hardware_id,
                factory_serial=format(factory_certificate.serial_number, "x"),
            )
    except IntegrityError:
        refuse_taken_hardware_id(hardware_id)  # a simultaneous enrolment of the same device won
        raise
    return _granted(device, issued)


def _granted(device: Device, issued: IssuedCertificate) -> Enrolled:
    if grants_on_register():
        tell_broker([device.id])  # a broker with a client per device must learn of the new one
    return Enrolled(device=Device.objects.get_with_current_certificate(device.id), issued=issued)
