"""Celery tasks: thin wrappers around the services. The periodic ones are scheduled by beat
(CELERY_BEAT_SCHEDULE); without CELERY_BROKER_URL they run in-process when called."""

from __future__ import annotations

from celery import shared_task

from broker.services import refresh_crl, sync_broker
from devices.alerts import send_expiry_alerts
from devices.delivery import discard_expired_bundles
from pki.services import mark_expired_certificates


@shared_task(name="onboarding.refresh_crl")  # type: ignore[untyped-decorator]  # celery is untyped
def refresh_crl_task(force: bool = False) -> int | None:
    """Re-sign the CRL at half its validity, so it never expires, and give it to the broker."""
    return refresh_crl(force=force)


@shared_task(name="onboarding.sync_broker")  # type: ignore[untyped-decorator]  # celery is untyped
def sync_broker_task() -> str:
    """Bring the broker back in step with the database (catches drift and missed reloads)."""
    return sync_broker().acl_sha256


@shared_task(name="onboarding.cleanup_bundles")  # type: ignore[untyped-decorator]  # celery is untyped
def cleanup_bundles_task() -> int:
    return discard_expired_bundles()


@shared_task(name="onboarding.expiry_alerts")  # type: ignore[untyped-decorator]  # celery is untyped
def expiry_alerts_task() -> int:
    return send_expiry_alerts()


@shared_task(name="onboarding.expire_certificates")  # type: ignore[untyped-decorator]  # celery is untyped
def expire_certificates_task() -> int:
    return mark_expired_certificates()
