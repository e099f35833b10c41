"""Device workflow errors: a machine-readable code, an HTTP status and a sentence."""

from __future__ import annotations

from kernel.errors import ServiceError


class DeviceError(ServiceError):
    code = "device_error"
    status = 400


class DeviceNotFound(DeviceError):
    code = "device_not_found"
    status = 404


class HardwareIdConflict(DeviceError):
    code = "hardware_id_exists"
    status = 409


class DeviceAlreadyRevoked(DeviceError):
    code = "already_revoked"
    status = 409


class InvalidDeviceState(DeviceError):
    code = "invalid_state"
    status = 409


class NewCSRRequired(DeviceError):
    """A well-formed request that this device's state refuses (it holds its own key): a conflict."""

    code = "csr_required"
    status = 409


# Renewal (EST simplereenroll, devices.renewal): the client certificate is the only credential.


class RenewalRefused(DeviceError):
    code = "renewal_refused"
    status = 403


class ClientCertificateUnknown(RenewalRefused):
    """Chains to the CA but is not a device certificate the portal recorded: no identity at all."""

    code = "certificate_unknown"
    status = 401


class ClientCertificateNotCurrent(RenewalRefused):
    """Revoked, expired, replaced past its grace, or of a device that is not active."""

    code = "certificate_not_current"


class RenewalNotDue(RenewalRefused):
    code = "renewal_not_due"
