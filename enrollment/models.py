"""What enrolment keeps: one-time enrolment codes (digests only) and enrolment groups
(manufacturer CAs whose factory certificates enrol devices with no operator action)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

# 144 bits from the CSPRNG (the issue asks for 128 or more), in base32: 29 characters from A-Z
# and 2-7, short enough to print on a factory sheet, usable as an HTTP Basic password (no ':'),
# and never starting like a spreadsheet formula, which the bulk result file would otherwise
# change (URL-safe base64 starts with '-' one time in 64).
CODE_BYTES = 18


def code_digest(code: str) -> str:
    """HMAC-SHA256 of the code keyed with a key derived from SECRET_KEY (as API tokens are, with
    a key of its own): a stolen database cannot even check guesses offline."""
    key = hashlib.sha256(b"enrollment-code-digest:" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(key, code.encode(), hashlib.sha256).hexdigest()


class EnrollmentCode(models.Model):
    """The one-time code a device awaiting enrolment authenticates with (EST simpleenroll, HTTP
    Basic: device id and code). Only its digest is stored; the code is shown once.

    `used_at` is set by a conditional UPDATE, so of two simultaneous enrolments exactly one
    wins. Wrong, used or expired codes count in `failed_attempts`; at
    ENROLLMENT_CODE_MAX_FAILURES the device is locked out until `locked_until`.
    """

    device = models.OneToOneField("devices.Device", on_delete=models.CASCADE, related_name="enrollment_code")
    digest = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)
    failed_attempts = models.PositiveIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"enrolment code of {self.device_id}"

    @staticmethod
    def new_code() -> str:
        return base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode("ascii").rstrip("=")

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at <= (now or timezone.now())

    def is_locked(self, now: dt.datetime | None = None) -> bool:
        return self.locked_until is not None and self.locked_until > (now or timezone.now())


class EnrollmentGroupQuerySet(models.QuerySet["EnrollmentGroup"]):
    def enabled(self) -> EnrollmentGroupQuerySet:
        return self.filter(enabled=True)


class EnrollmentGroup(models.Model):
    """A manufacturer's CA whose factory certificates (IDevIDs, IEEE 802.1AR) enrol devices.

    The CA certificate is checked when the group is made (`enrollment.factory.parse_ca_certificate`);
    its subject and SHA-256 fingerprint are kept beside it, to find the group of a factory
    certificate by its issuer, and so that one CA belongs to one group only. An empty allow-list
    admits every hardware id the CA vouches for.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=128, unique=True)
    ca_certificate = models.TextField()
    ca_subject = models.CharField(max_length=1024, db_index=True)
    ca_fingerprint = models.CharField(max_length=64, unique=True)
    ca_not_after = models.DateTimeField()
    allowed_hardware_ids = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = models.Manager.from_queryset(EnrollmentGroupQuerySet)()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def allows(self, hardware_id: str) -> bool:
        return not self.allowed_hardware_ids or hardware_id in self.allowed_hardware_ids
