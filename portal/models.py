from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class BulkJobStatus(models.TextChoices):
    VALIDATED = "validated", "Checked, waiting for confirmation"
    RUNNING = "running", "Registering"
    FINISHED = "finished", "Finished"
    COLLECTED = "collected", "Results downloaded"


class BulkJob(models.Model):
    """A CSV bulk registration: its checked rows (no secrets), its progress, its results.

    The results hold bundle passwords, so each is stored only encrypted (`BulkResult`) under a
    key that only the browser which started the job holds; they are deleted once downloaded.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    address = models.GenericIPAddressField(null=True, blank=True)
    filename = models.CharField(max_length=255)
    rows = models.JSONField(default=list)
    total = models.PositiveIntegerField()
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=BulkJobStatus.choices, default=BulkJobStatus.VALIDATED)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Written after every row: a running job whose heartbeat stopped was interrupted (a restart).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    collected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"bulk registration {self.filename} ({self.total} rows)"


class BulkResult(models.Model):
    """One row's outcome (device id, link, password or error), AES-256-GCM encrypted."""

    job = models.ForeignKey(BulkJob, on_delete=models.CASCADE, related_name="results")
    line = models.PositiveIntegerField()
    succeeded = models.BooleanField()
    sealed = models.BinaryField()

    class Meta:
        ordering = ["line"]
        constraints = [models.UniqueConstraint(fields=["job", "line"], name="portal_bulk_result_once")]

    def __str__(self) -> str:
        return f"line {self.line} of {self.job_id}"
