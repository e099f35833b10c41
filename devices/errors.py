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
