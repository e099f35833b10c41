from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class AuditAction(models.TextChoices):
    DEVICE_REGISTERED = "device.registered", "Device registered"
    DEVICE_ENROLLED = "device.enrolled", "Device enrolled (EST)"
    DEVICE_PROVISIONING_FAILED = "device.failed", "Provisioning failed"
    DEVICE_REISSUED = "device.reissued", "Certificate re-issued"
    DEVICE_REVOKED = "device.revoked", "Device revoked"
    DEVICE_DELETED = "device.deleted", "Device deleted"
    DEVICE_RENEWED = "device.renewed", "Certificate renewed by the device"
    RENEWAL_REFUSED = "renewal.refused", "Renewal refused"
    RENEWAL_REQUESTED = "renewal.requested", "Renewal requested by an operator"
    BUNDLE_ISSUED = "bundle.issued", "Credential bundle issued"
    BUNDLE_DOWNLOADED = "bundle.downloaded", "Credential bundle downloaded"
    LOGIN_SUCCEEDED = "login.succeeded", "Sign-in"
    LOGIN_FAILED = "login.failed", "Failed sign-in"
    LOGIN_OTP_FAILED = "login.otp_failed", "Failed second factor"
    OTP_ENROLLED = "otp.enrolled", "Authenticator enrolled"
    LOGGED_OUT = "logout", "Sign-out"
    TOKEN_CREATED = "token.created", "API token created"
    TOKEN_REVOKED = "token.revoked", "API token revoked"
    ENROLLMENT_CODE_ISSUED = "enrollment.code_issued", "Enrolment code issued"
    ENROLLMENT_CODE_REDEEMED = "enrollment.code_redeemed", "Enrolment code used"
    ENROLLMENT_CODE_REFUSED = "enrollment.code_refused", "Enrolment code refused"
    ENROLLMENT_REFUSED = "enrollment.refused", "Factory certificate refused"
    ENROLLMENT_GROUP_CREATED = "enrollment_group.created", "Enrolment group created"
    ENROLLMENT_GROUP_CHANGED = "enrollment_group.changed", "Enrolment group changed"
    ENROLLMENT_GROUP_DELETED = "enrollment_group.deleted", "Enrolment group deleted"


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise PermissionError("The audit trail is append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("The audit trail is append-only.")


class AuditEvent(models.Model):
    """Who did what, when, from where. Rows are only ever added."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text too: the record must outlive the user account.
    actor_name = models.CharField(max_length=150, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    device_id = models.UUIDField(null=True, blank=True, db_index=True)
    detail = models.JSONField(default=dict, blank=True)

    objects = models.Manager.from_queryset(AuditEventQuerySet)()

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} by {self.actor_name or 'anonymous'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError("The audit trail is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("The audit trail is append-only.")
