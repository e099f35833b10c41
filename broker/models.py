from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from broker.access import Access
from broker.acl import InvalidTopicFilter, reaches_other_devices, validate_topic_filter

SHARED_ONLY_MESSAGE = "This filter reaches other devices' topics; mark the rule shared to allow it."


class AclRule(models.Model):
    """A topic right beyond the device's own tree (`devices/{id}/#` is implicit for every device)."""

    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="acl_rules")
    topic_filter = models.CharField(max_length=256)
    access = models.CharField(max_length=16, choices=Access.choices)
    shared = models.BooleanField(
        default=False,
        help_text="Allow this filter to reach other devices' trees (for example a fleet-wide command topic).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["device", "topic_filter"]
        constraints = [
            models.UniqueConstraint(fields=["device", "topic_filter", "access"], name="broker_rule_unique")
        ]
        verbose_name = "ACL rule"

    def __str__(self) -> str:
        return f"{self.access} {self.topic_filter}"

    def clean(self) -> None:
        try:
            validate_topic_filter(self.topic_filter)
        except InvalidTopicFilter as exc:
            raise ValidationError({"topic_filter": str(exc)}) from None
        if (
            self.access != Access.DENY
            and not self.shared
            and reaches_other_devices(self.topic_filter, str(self.device_id))
        ):
            raise ValidationError({"topic_filter": SHARED_ONLY_MESSAGE})


class BrokerSync(models.Model):
    """One row per configuration pushed to the broker: what it holds, and whether it reloaded."""

    backend = models.CharField(max_length=32)
    synced_at = models.DateTimeField(auto_now_add=True, db_index=True)
    acl_sha256 = models.CharField(max_length=64)
    crl_number = models.PositiveBigIntegerField(null=True)
    revoked_devices = models.PositiveIntegerField(
        help_text="Devices denied their topics (of the changed devices, for a change)."
    )
    extra_rules = models.PositiveIntegerField(
        help_text="Extra rules given (of the changed devices, for a change)."
    )
    changed_devices = models.PositiveIntegerField(
        null=True, blank=True, help_text="Devices a change brought in step; empty for a full sync."
    )
    reloaded = models.BooleanField(
        help_text="The broker was told to reload, or needed no reload (its CRL was already current)."
    )

    class Meta:
        ordering = ["-synced_at"]

    def __str__(self) -> str:
        return f"broker sync {self.synced_at:%Y-%m-%d %H:%M:%S}"


class PendingChange(models.Model):
    """A device whose broker rights changed and that no successful sync has covered yet.

    An outbox: written when the change commits, deleted by the sync that gives it to the broker.
    A sync that fails leaves it, so the next change (in any process) or the next full sync
    carries it; /health reports changes that have waited too long.
    """

    device_id = models.CharField(max_length=64)
    queued_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["queued_at"]

    def __str__(self) -> str:
        return f"broker change for {self.device_id}"


class BrokerListener(models.Model):
    """The listener `mosquitto_config` last wrote: where devices and the portal find the broker.

    One row per run; the newest is the broker's address unless BROKER_PUBLIC_HOST/PORT (for
    devices) or BROKER_PROBE_HOST/PORT (for the portal's own connections) override it. In the
    database, so every portal host reads the same address.
    """

    host = models.CharField(max_length=255, help_text="The first --hostname: what devices connect to.")
    port = models.PositiveIntegerField()
    bind_address = models.CharField(max_length=255, blank=True)
    backend = models.CharField(max_length=32)
    pid_file = models.CharField(
        max_length=4096,
        blank=True,
        help_text="The pid_file written into mosquitto.conf: the portal signals the broker through it "
        "(unless MOSQUITTO_PID_FILE or BROKER_RELOAD_COMMAND say otherwise).",
    )
    written_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"broker listener {self.host}:{self.port}"
