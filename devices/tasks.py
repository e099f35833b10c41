"""Celery tasks: thin wrappers around the services. The periodic ones are scheduled by beat
(CELERY_BEAT_SCHEDULE); without CELERY_BROKER_URL every task runs in-process when called."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from broker.services import refresh_crl
from devices import services
from devices.alerts import send_expiry_alerts
from devices.delivery import discard_expired_bundles
from pki.revocation import mark_expired_certificates

PROVISION_ATTEMPTS = 6  # transient failures: 1, 2, 4, 8, 16 s apart, then the device is failed


@shared_task(  # type: ignore[untyped-decorator]  # celery is untyped
    name="onboarding.provision_device", bind=True, max_retries=PROVISION_ATTEMPTS - 1
)
def provision_device_task(task: Any, device_id: str, link_id: int, sealed: str) -> str:
    """Sign, package and grant a pending device. The arguments are ids and a sealed password."""
    try:
        return services.provision_device(device_id, link_id, sealed)
    except services.TRANSIENT_ERRORS as exc:
        if task.request.retries >= task.max_retries:
            services.mark_provisioning_failed(
                device_id, f"Provisioning failed {PROVISION_ATTEMPTS} times ({exc}); retry once it is fixed."
            )
            return "failed"
        raise task.retry(exc=exc, countdown=2**task.request.retries) from exc


@shared_task(name="onboarding.refresh_crl")  # type: ignore[untyped-decorator]  # celery is untyped
def refresh_crl_task(force: bool = False) -> int | None:
    """Re-sign the CRL at half its validity, so it never expires, and give it to the broker."""
    return refresh_crl(force=force)


@shared_task(name="onboarding.sync_broker")  # type: ignore[untyped-decorator]  # celery is untyped
def sync_broker_task(prove: bool = False, changes: bool = False) -> str:
    """Bring the broker in step with the database: for the devices of a burst of changes
    (debounced, with proof of enforcement) and, in full, hourly (catches drift and missed reloads)."""
    return services.sync_broker_debounced(prove=prove, changes=changes)


@shared_task(name="onboarding.catch_up_broker")  # type: ignore[untyped-decorator]  # celery is untyped
def catch_up_broker_task() -> str:
    """Every minute and at worker start: sync and prove what the broker has not been given yet
    (a web process killed between its commit and its push), cheap when it is in step."""
    return services.catch_up_broker()


@shared_task(name="onboarding.cleanup_bundles")  # type: ignore[untyped-decorator]  # celery is untyped
def cleanup_bundles_task() -> int:
    return discard_expired_bundles()


@shared_task(name="onboarding.expiry_alerts")  # type: ignore[untyped-decorator]  # celery is untyped
def expiry_alerts_task() -> int:
    return send_expiry_alerts()


@shared_task(name="onboarding.expire_certificates")  # type: ignore[untyped-decorator]  # celery is untyped
def expire_certificates_task() -> int:
    return mark_expired_certificates()
