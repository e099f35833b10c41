"""Celery tasks of the devices app: thin wrappers around its workflows. The periodic ones are
scheduled by beat (CELERY_BEAT_SCHEDULE); the workflows send them by name (kernel.tasks), so
this module imports them and they never import it. The broker's tasks are in broker/tasks.py."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from devices import provisioning, registration
from devices.alerts import send_expiry_alerts
from devices.delivery import discard_expired_bundles
from devices.renewal import revoke_superseded_certificates
from pki.revocation import mark_expired_certificates

PROVISION_ATTEMPTS = 6  # transient failures: 1, 2, 4, 8, 16 s apart, then the device is failed


@shared_task(  # type: ignore[untyped-decorator]  # celery is untyped
    name=registration.PROVISION_TASK, bind=True, max_retries=PROVISION_ATTEMPTS - 1
)
def provision_device_task(task: Any, device_id: str, link_id: int, sealed: str) -> str:
    """Sign, package and grant a pending device. The arguments are ids and a sealed password."""
    try:
        return provisioning.provision_device(device_id, link_id, sealed)
    except provisioning.TRANSIENT_ERRORS as exc:
        if task.request.retries >= task.max_retries:
            provisioning.mark_provisioning_failed(
                device_id, f"Provisioning failed {PROVISION_ATTEMPTS} times ({exc}); retry once it is fixed."
            )
            return "failed"
        raise task.retry(exc=exc, countdown=2**task.request.retries) from exc


@shared_task(name="onboarding.cleanup_bundles")  # type: ignore[untyped-decorator]  # celery is untyped
def cleanup_bundles_task() -> int:
    return discard_expired_bundles()


@shared_task(name="onboarding.expiry_alerts")  # type: ignore[untyped-decorator]  # celery is untyped
def expiry_alerts_task() -> int:
    return send_expiry_alerts()


@shared_task(name="onboarding.expire_certificates")  # type: ignore[untyped-decorator]  # celery is untyped
def expire_certificates_task() -> int:
    return mark_expired_certificates()


@shared_task(name="onboarding.revoke_superseded")  # type: ignore[untyped-decorator]  # celery is untyped
def revoke_superseded_task() -> int:
    """Certificates renewals replaced, past RENEWAL_GRACE_HOURS: revoked as superseded."""
    return revoke_superseded_certificates()
