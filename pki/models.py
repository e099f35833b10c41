from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from cryptography import x509
from django.db import models
from django.utils import timezone

from pki.errors import CertificateAlreadyRevoked
from pki.profiles import KeyType, RevocationReason

if TYPE_CHECKING:
    CertificateManagerBase = models.Manager["Certificate"]
else:
    CertificateManagerBase = models.Manager


class CertificateStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"


class CertificatePurpose(models.TextChoices):
    DEVICE = "device", "Device (TLS client)"
    BROKER = "broker", "Broker (TLS server)"
    MONITOR = "monitor", "Monitoring probe (TLS client)"
    PORTAL = "portal", "Portal TLS front (TLS server)"


class CertificateQuerySet(models.QuerySet["Certificate"]):
    def active(self, now: dt.datetime | None = None) -> CertificateQuerySet:
        return self.filter(status=CertificateStatus.ACTIVE, not_after__gt=now or timezone.now())

    def revoked(self) -> CertificateQuerySet:
        return self.filter(status=CertificateStatus.REVOKED)

    def expiring(self, days: int, now: dt.datetime | None = None) -> CertificateQuerySet:
        """Active certificates whose validity ends within `days` days."""
        now = now or timezone.now()
        return self.active(now).filter(not_after__lte=now + dt.timedelta(days=days))

    def on_crl(self, now: dt.datetime | None = None) -> CertificateQuerySet:
        """What the CRL lists: revoked certificates that have not expired yet (RFC 5280 3.3)."""
        return self.revoked().filter(not_after__gt=now or timezone.now())


class Certificate(models.Model):
    """Every certificate the CA has signed. Rows are never deleted: the CRL is built from them."""

    # RFC 5280 4.1.2.2: positive, at most 20 octets; stored as even-length upper-case hex,
    # exactly what `openssl x509 -serial` prints.
    serial = models.CharField(max_length=40, unique=True)
    fingerprint_sha256 = models.CharField("SHA-256 fingerprint", max_length=95, unique=True)
    common_name = models.CharField(max_length=64, db_index=True)
    # The device this certificate was issued to. A deleted device leaves its certificates
    # behind (revoked): the CRL and the audit history are built from them.
    device = models.ForeignKey(
        "devices.Device", null=True, blank=True, on_delete=models.SET_NULL, related_name="certificates"
    )
    subject = models.CharField(max_length=255)
    purpose = models.CharField(
        max_length=16, choices=CertificatePurpose.choices, default=CertificatePurpose.DEVICE
    )
    key_type = models.CharField(max_length=16, choices=[(kind.value, kind.value) for kind in KeyType])
    from_csr = models.BooleanField("key from a CSR", default=False)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField(db_index=True)
    pem = models.TextField()
    status = models.CharField(
        max_length=16, choices=CertificateStatus.choices, default=CertificateStatus.ACTIVE, db_index=True
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(
        max_length=32, blank=True, choices=[(reason.value, reason.value) for reason in RevocationReason]
    )
    # When a renewal replaced it: it stays valid for RENEWAL_GRACE_HOURS (so a device that lost
    # the answer can retry), then the scheduled job revokes it as superseded.
    superseded_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = CertificateManagerBase.from_queryset(CertificateQuerySet)()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "not_after"], name="pki_cert_status_expiry")]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status="revoked") | models.Q(revoked_at__isnull=False),
                name="pki_cert_revoked_has_time",
            )
        ]

    def __str__(self) -> str:
        return f"{self.common_name} ({self.serial})"

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)

    def load(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.pem.encode())

    def revoke(self, reason: RevocationReason, when: dt.datetime | None = None) -> None:
        """Mark revoked (the caller saves and republishes the CRL). Revoking twice is an error."""
        if self.status == CertificateStatus.REVOKED:
            raise CertificateAlreadyRevoked(
                f"Certificate {self.serial} was already revoked at {self.revoked_at:%Y-%m-%d %H:%M:%S} UTC."
            )
        self.status = CertificateStatus.REVOKED
        self.revoked_at = when or timezone.now()
        self.revocation_reason = reason.value


class ExpiryAlert(models.Model):
    """An expiry warning already sent, so each certificate (or the CA) is warned once per threshold."""

    subject_key = models.CharField(max_length=64, help_text="certificate serial, or 'ca'")
    threshold_days = models.PositiveIntegerField()
    not_after = models.DateTimeField()
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subject_key", "threshold_days", "not_after"], name="pki_alert_once"
            )
        ]

    def __str__(self) -> str:
        return f"expiry alert for {self.subject_key} ({self.threshold_days} days)"


class CertificateRevocationList(models.Model):
    """One row per CRL signed: the CRL number only grows (RFC 5280 5.2.3)."""

    number = models.PositiveBigIntegerField(unique=True)
    this_update = models.DateTimeField()
    next_update = models.DateTimeField()
    revoked_count = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        verbose_name = "CRL"
        verbose_name_plural = "CRLs"

    def __str__(self) -> str:
        return f"CRL #{self.number}"
