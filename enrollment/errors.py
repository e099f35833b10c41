"""Enrolment errors: a machine-readable code, the HTTP status an API (and the EST endpoints)
answer with, and a sentence.

The codes of a one-time enrolment code are all 401: the EST client authenticated with it
(HTTP Basic) and failed (RFC 7030 3.2.3). A device locked out after repeated failures gets 429
with `retry_after` (seconds), a correct code included, so the answer never tells a guesser
which guess was right. A factory certificate that no enrolment group trusts is 401 too; one
that a group trusts but refuses (disabled, not on its allow-list) is 403, and a hardware id
that already names a device is 409 (`hardware_id_exists`, the registration's own error).
"""

from __future__ import annotations

from kernel.errors import ServiceError


class EnrollmentError(ServiceError):
    code = "enrollment_error"
    status = 400


# --- One-time enrolment codes ---


class EnrollmentCodeInvalid(EnrollmentError):
    """Wrong code, unknown device, or a device with no code: one answer for all three."""

    code = "enrollment_code_invalid"
    status = 401


class EnrollmentCodeExpired(EnrollmentError):
    code = "enrollment_code_expired"
    status = 401


class EnrollmentCodeUsed(EnrollmentError):
    code = "enrollment_code_used"
    status = 401


class EnrollmentLocked(EnrollmentError):
    code = "enrollment_locked"
    status = 429


# --- Enrolment groups and factory certificates ---


class InvalidCACertificate(EnrollmentError):
    code = "invalid_ca_certificate"
    status = 400


class EnrollmentGroupNotFound(EnrollmentError):
    code = "enrollment_group_not_found"
    status = 404


class EnrollmentGroupExists(EnrollmentError):
    code = "enrollment_group_exists"
    status = 409


class FactoryCertificateUntrusted(EnrollmentError):
    """No enrolment group's CA signed it (or the chain, signature or key usage is wrong)."""

    code = "factory_certificate_untrusted"
    status = 401


class FactoryCertificateExpired(EnrollmentError):
    """The factory certificate, or a CA certificate of its chain, is outside its validity."""

    code = "factory_certificate_expired"
    status = 401


class FactoryCertificateNoHardwareId(EnrollmentError):
    """Neither a subject serialNumber nor a CN usable as a hardware id (one line, 128 characters)."""

    code = "factory_certificate_no_hardware_id"
    status = 401


class EnrollmentGroupDisabled(EnrollmentError):
    code = "enrollment_group_disabled"
    status = 403


class HardwareIdNotAllowed(EnrollmentError):
    code = "hardware_id_not_allowed"
    status = 403
