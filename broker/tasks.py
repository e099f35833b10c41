"""Celery tasks of the broker: thin wrappers around `broker.dispatch` and `broker.sync`.
The names are the ones the beat schedule (CELERY_BEAT_SCHEDULE) and `run_task` use."""

from __future__ import annotations

from celery import shared_task

from broker import dispatch
from broker.sync import refresh_crl


@shared_task(name="onboarding.refresh_crl")  # type: ignore[untyped-decorator]  # celery is untyped
def refresh_crl_task(force: bool = False) -> int | None:
    """Re-sign the CRL at half its validity, so it never expires, and give it to the broker."""
    return refresh_crl(force=force)


@shared_task(name=dispatch.SYNC_TASK)  # type: ignore[untyped-decorator]  # celery is untyped
def sync_broker_task(prove: bool = False, changes: bool = False) -> str:
    """Bring the broker in step with the database: for the devices of a burst of changes
    (debounced, with proof of enforcement) and, in full, hourly (catches drift and missed reloads)."""
    return dispatch.sync_broker_debounced(prove=prove, changes=changes)


@shared_task(name="onboarding.catch_up_broker")  # type: ignore[untyped-decorator]  # celery is untyped
def catch_up_broker_task() -> str:
    """Every minute and at worker start: sync and prove what the broker has not been given yet
    (a web process killed between its commit and its push), cheap when it is in step."""
    return dispatch.catch_up_broker()
