from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models
from django.db.models import Prefetch
from django.utils import timezone

from audit.models import AuditAction
from audit.services import record
from onboard_cli import text_rules, vocabulary
from pki.profiles import RevocationReason

if TYPE_CHECKING:
    from pki.models import Certificate

    DeviceManagerBase = models.Manager["Device"]
else:
    DeviceManagerBase = models.Manager


class DeviceStatus(models.TextChoices):
    # The names are the API's, shared with the `onboard` client (onboard_cli.vocabulary).
    PENDING = vocabulary.PENDING, "Pending"
    ACTIVE = vocabulary.ACTIVE, "Active"
    REVOKED = vocabulary.REVOKED, "Revoked"
    FAILED = vocabulary.FAILED, "Failed"
    AWAITING_ENROLLMENT = vocabulary.AWAITING_ENROLLMENT, "Awaiting enrolment"


#: Certificates of one device, newest first (the order `Device.current_certificate` uses).
NEWEST_FIRST = ("-created_at", "-pk")


class DeviceQuerySet(models.QuerySet["Device"]):
    def with_certificates(self) -> DeviceQuerySet:
        """Prefetch every device's certificates, newest first, in one extra query (no N+1)."""
        from pki.models import Certificate

        return self.select_related("created_by").prefetch_related(
            Prefetch("certificates", queryset=Certificate.objects.order_by(*NEWEST_FIRST))
        )

    def get_with_current_certificate(self, pk: uuid.UUID) -> Device:
        """One device with its newest certificate, in one query (two for a device without one,
        such as a pending one). Raises Device.DoesNotExist."""
        from pki.models import Certificate

        newest = (
            Certificate.objects.select_related("device__created_by")
            .filter(device_id=pk)
            .order_by(*NEWEST_FIRST)
            .first()
        )
        device: Device | None = newest.device if newest is not None else None
        if device is None:
            device = self.select_related("created_by").get(pk=pk)
        device.preloaded_current_certificate = (newest,)
        return device

    def expiring(self, days: int, now: dt.datetime | None = None) -> DeviceQuerySet:
        """Devices whose active certificate ends within `days` days."""
        from pki.models import Certificate

        now = now or timezone.now()
        return self.filter(
            pk__in=Certificate.objects.expiring(days, now).filter(device__isnull=False).values("device_id")
        )

    def return_to_failed(self, reason: str) -> int:
        """Those still pending go back to failed with `reason`: the undo of a retry whose task
        was never sent. No audit event: the failure was audited when it happened."""
        return self.filter(status=DeviceStatus.PENDING).update(
            status=DeviceStatus.FAILED, failure_reason=reason, updated_at=timezone.now()
        )


class Device(models.Model):
    """A device of the fleet. Its UUID is its identity everywhere: certificate CN and MQTT username."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=text_rules.MAX_LENGTH)
    # Unique when given: several devices may have none (NULLs are distinct).
    hardware_id = models.CharField(max_length=text_rules.MAX_LENGTH, null=True, blank=True, unique=True)
    status = models.CharField(
        max_length=32, choices=DeviceStatus.choices, default=DeviceStatus.PENDING, db_index=True
    )
    metadata = models.JSONField(default=dict, blank=True)
    failure_reason = models.TextField(blank=True)
    # What the provisioning task works from, kept so that a failed device can be retried:
    # the key type the server generates, or the device's own CSR (public data).
    requested_key_type = models.CharField(max_length=16, blank=True)
    csr_pem = models.TextField(blank=True)
    # When the broker was known to enforce this device's revocation (reloaded, and confirmed
    # by the probe where one is configured). Null while revoked but not yet enforced.
    revocation_enforced_at = models.DateTimeField(null=True, blank=True)
    # Set by an operator (after a CA change, a suspected key leak) to let the device renew
    # before its renewal window opens (RENEWAL_WINDOW_PERCENT); cleared by the renewal.
    renewal_requested_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeviceManagerBase.from_queryset(DeviceQuerySet)()

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("register_device", "Can register devices"),
            ("revoke_device", "Can revoke devices"),
            ("reissue_device", "Can re-issue device certificates"),
        ]

    #: Set by `get_with_current_certificate`: (the newest certificate or None,).
    preloaded_current_certificate: tuple[Certificate | None] | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    # State changes: each saves the fields it changes and writes its audit event, inside the
    # caller's transaction. The cryptography (signing, the CRL) stays in the workflows.

    def activate(
        self,
        certificate: Certificate,
        *,
        actor: Any = None,
        address: str | None = None,
        enrolled_by: str | None = None,
        **detail: Any,
    ) -> None:
        """The last step of registration: the device becomes active and holds its broker rights,
        and its registration is audited. A device inserted active (registered in the request)
        is not written again. `enrolled_by` (an EST enrolment's method: `enrollment_code`,
        `factory_certificate`) audits it as `device.enrolled` instead.

        The default rights (`devices/{id}/#`) follow from the active certificate alone, so there
        is nothing more to write here until a device has rules of its own.
        """
        if self.status != DeviceStatus.ACTIVE:
            self.status = DeviceStatus.ACTIVE
            self.failure_reason = ""
            self.save(update_fields=["status", "failure_reason", "updated_at"])
        if enrolled_by is not None:
            detail["method"] = enrolled_by
        record(
            AuditAction.DEVICE_ENROLLED if enrolled_by is not None else AuditAction.DEVICE_REGISTERED,
            actor=actor, address=address, device_id=self.id,
            serial=certificate.serial, key_type=certificate.key_type, **detail,
        )  # fmt: skip

    def mark_failed(self, reason: str) -> None:
        """Provisioning failed: a reason an operator can act on (a retry starts again)."""
        self.status = DeviceStatus.FAILED
        self.failure_reason = reason
        self.save(update_fields=["status", "failure_reason", "updated_at"])
        record(AuditAction.DEVICE_PROVISIONING_FAILED, device_id=self.id, reason=reason)

    def mark_pending(self) -> None:
        """A failed device tried again: pending, its old reason cleared (audited by its outcome)."""
        self.status = DeviceStatus.PENDING
        self.failure_reason = ""
        self.save(update_fields=["status", "failure_reason", "updated_at"])

    def revoke(self, reason: RevocationReason, *, actor: Any = None, address: str | None = None) -> None:
        """The device is revoked (its certificates are revoked on the CRL by the workflow)."""
        self.status = DeviceStatus.REVOKED
        self.save(update_fields=["status", "updated_at"])
        record(
            AuditAction.DEVICE_REVOKED, actor=actor, address=address, device_id=self.id, reason=reason.value
        )

    def request_renewal(self, *, actor: Any = None, address: str | None = None) -> None:
        """An operator lets the device renew now, whatever its renewal window says."""
        self.renewal_requested_at = timezone.now()
        self.save(update_fields=["renewal_requested_at", "updated_at"])
        record(AuditAction.RENEWAL_REQUESTED, actor=actor, address=address, device_id=self.id)

    def renewed(self, certificate: Certificate, previous: Certificate, *, address: str | None = None) -> None:
        """The device renewed itself (EST simplereenroll): the operator's request is done."""
        self.renewal_requested_at = None
        self.save(update_fields=["renewal_requested_at", "updated_at"])
        record(
            AuditAction.DEVICE_RENEWED, address=address, device_id=self.id,
            serial=certificate.serial, previous_serial=previous.serial, key_type=certificate.key_type,
        )  # fmt: skip

    @property
    def current_certificate(self) -> Certificate | None:
        """The newest certificate; uses the preloaded one or the prefetched list if there is one."""
        if self.preloaded_current_certificate is not None:
            return self.preloaded_current_certificate[0]
        certificates = list(self.certificates.all())
        if not certificates:
            return None
        return max(certificates, key=lambda certificate: (certificate.created_at, certificate.pk))


class IdempotentRequest(models.Model):
    """The stored answer to a request sent with an `Idempotency-Key` header.

    The answer can hold a bundle password or a private key, so it is kept only encrypted with
    a key derived from the Idempotency-Key itself, which is stored only as a digest: the
    database alone cannot reveal it, and the client that retries can.
    """

    key_digest = models.CharField(max_length=64, unique=True)
    request_digest = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    encrypted_response = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"idempotent request {self.key_digest[:12]}…"


class DownloadLink(models.Model):
    """A one-time, expiring link to a device's encrypted credential bundle.

    Only the SHA-256 digest of the token is stored; the token itself is in the URL handed to
    the operator once. `used_at` is set by a conditional UPDATE, so of two simultaneous
    downloads exactly one succeeds.
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="download_links")
    # Both empty while the device is being provisioned: the link is handed out with the 202
    # answer and starts serving once a worker has built the bundle.
    certificate = models.ForeignKey(
        "pki.Certificate", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    token_digest = models.CharField(max_length=64, unique=True)
    # Ties the file on disk to this link: a replaced or altered creds.zip is never served for it.
    bundle_sha256 = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)
    # Set when a newer bundle replaces this one before it was used.
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"download link for {self.device_id} ({self.created_at:%Y-%m-%d %H:%M})"


class DownloadOutcome(models.TextChoices):
    SUCCESS = "success", "Downloaded"
    REUSED = "reused", "Refused: already used"
    EXPIRED = "expired", "Refused: expired"
    WITHDRAWN = "withdrawn", "Refused: replaced by a newer bundle"
    UNKNOWN = "unknown", "Refused: unknown link"
    MISSING = "missing", "Failed: bundle file missing"
    NOT_READY = "not_ready", "Refused: still being provisioned"
    REVOKED = "revoked", "Refused: device revoked"


class DownloadAttempt(models.Model):
    """Every request for a bundle, answered or refused, for the audit trail."""

    link = models.ForeignKey(
        DownloadLink, null=True, blank=True, on_delete=models.SET_NULL, related_name="attempts"
    )
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=16, choices=DownloadOutcome.choices)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.get_outcome_display()} at {self.at:%Y-%m-%d %H:%M:%S}"
