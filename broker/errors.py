"""The broker app's errors: what a user or an operator is told when the broker cannot be kept in step."""

from __future__ import annotations

from kernel.errors import ServiceError


class BrokerSyncError(ServiceError):
    code = "broker_sync_failed"
    status = 503
