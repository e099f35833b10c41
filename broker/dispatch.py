"""The one small interface through which the devices app talks to the broker.

It pushes changes (`tell_broker`, debounced onto a worker by `request_broker_sync`), proves
revocations with a canary certificate the broker must refuse (`_sync_and_prove`), catches up
after a crash (`catch_up_broker`), and names the few broker facts a device workflow needs.
The devices app imports from the broker only this module and `broker.models`; the broker
imports nothing of the devices app.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Collection
from typing import Any

from django.conf import settings
from django.db import DatabaseError, models
from django.utils import timezone

from broker.access import Access
from broker.address import broker_set_up, probe_address, public_address
from broker.errors import BrokerSyncError
from broker.models import AclRule
from broker.probe import SyncCanary, issue_sync_canary, probe_broker, probe_configured, unreachable_reason
from broker.rules import default_rules
from broker.sync import (
    broker_lag,
    enforce_now,
    grants_on_register,
    queue_changes,
    revocation_effect,
    sync_broker,
)
from kernel.locks import LockTimeout, exclusive_lock
from kernel.tasks import QUEUE_ERRORS, TaskQueueUnavailable, queue_redis, run_task, tasks_run_in_process
from pki.errors import PKIError
from pki.profiles import RevocationReason
from pki.revocation import revoke_certificates

__all__ = [
    "CATCH_UP_BATCH",
    "SYNC_PENDING_KEY",
    "Access",
    "SyncCanary",
    "catch_up_broker",
    "default_rules",
    "grants_on_register",
    "public_address",
    "push_revocation",
    "queue_changes",
    "request_broker_sync",
    "revocation_canary",
    "revocation_effect",
    "sync_broker_debounced",
    "tell_broker",
]

logger = logging.getLogger(__name__)

#: Held by the one process catching the broker up; the others wait for it.
CATCH_UP_LOCK = "broker-catch-up"

#: The task that syncs the broker (broker.tasks), sent by name.
SYNC_TASK = "onboarding.sync_broker"
#: A device's revoked state (devices.models.DeviceStatus.REVOKED), by value.
REVOKED = "revoked"


def _unproven_revocations() -> models.QuerySet[Any]:
    """Revoked devices whose refusal by the broker is not proven yet.

    The devices table is the one `broker.models` already points at (`AclRule.device`, the
    model "devices.Device"), reached through that relation: the broker reads and stamps its
    proof of enforcement there without importing the devices app.
    """
    device_model = AclRule._meta.get_field("device").related_model
    assert isinstance(device_model, type)  # a model class, not "self"
    return device_model._default_manager.filter(status=REVOKED, revocation_enforced_at__isnull=True)


def revocation_canary() -> SyncCanary | None:
    """A canary certificate for a revocation to put on the same CRL as the device, to learn when
    the broker enforces it: only where the proof is had in this process (a probe configured and
    no workers; with workers, the debounced sync proves it)."""
    return issue_sync_canary() if probe_configured() and tasks_run_in_process() else None


def push_revocation(device_id: uuid.UUID) -> None:
    """Bring the broker in step for a device revoked earlier (a repeated revoke), proving the
    revocation when it is not proven yet. Failures are logged: the caller answers all the same."""
    unproven = _unproven_revocations().filter(pk=device_id).exists()
    if not tasks_run_in_process() or not unproven:
        tell_broker([device_id])  # with workers, the debounced sync proves it
        return
    try:
        _sync_and_prove(prove=True, devices=(str(device_id),))
    except (BrokerSyncError, LockTimeout, PKIError) as exc:
        logger.error("broker not updated for the revoked device %s: %s", device_id, exc.message)


def tell_broker(
    devices: Collection[uuid.UUID | str], canary: SyncCanary | None = None, *, queued: bool = False
) -> dt.datetime | None:
    """Push the new CRL and the changed devices' rights to the broker. The change already
    stands in the database and the CA's CRL. The devices are recorded as pending changes first
    (`PendingChange`; `queued`: the caller's transaction did), so a broker that cannot be
    reached now gets them from the next sync (the next change, `broker_sync`, the catch-up at
    start and every minute); /health reports them meanwhile.

    With workers, the push is one debounced task for a burst of changes (`request_broker_sync`).
    """
    try:
        if not queued:
            queue_changes(devices)
    except DatabaseError as exc:
        logger.error("could not record the broker change of %s: %s", list(devices), exc)
        return None
    if not tasks_run_in_process():
        if request_broker_sync():
            return None
        logger.warning("task queue unreachable: pushing to the broker from this process")
    try:
        enforced_at, _devices = enforce_now(canary, devices=())
    except (BrokerSyncError, LockTimeout) as exc:
        logger.error("broker not updated: %s", exc.message)
        return None
    return enforced_at


SYNC_PENDING_KEY = "onboarding:broker-sync-pending"


def request_broker_sync(*, countdown: float | None = None) -> bool:
    """Ask a worker to sync the pending broker changes, once for a burst. False if the queue is down.

    The first change of a burst sets a marker in Redis and enqueues one sync a moment later;
    changes that find the marker set add nothing, since that sync has not read the pending
    changes yet. The task clears the marker before it reads, so a change arriving during a
    sync queues one more: the last state always reaches the broker.
    """
    try:
        if not queue_redis().set(SYNC_PENDING_KEY, "1", nx=True, ex=settings.BROKER_SYNC_MARKER_SECONDS):
            return True
        run_task(
            SYNC_TASK,
            kwargs={"prove": True, "changes": True},
            countdown=settings.BROKER_SYNC_DEBOUNCE_SECONDS if countdown is None else countdown,
            undo=_forget_sync_marker,
        )
    except TaskQueueUnavailable as exc:
        logger.error("could not queue a broker sync: %s", exc.message)
        return False
    except QUEUE_ERRORS as exc:
        logger.error("could not queue a broker sync: %s", exc)
        return False
    return True


def _forget_sync_marker() -> str:
    """A marker whose sync was never queued would make the rest of the burst add nothing for
    BROKER_SYNC_MARKER_SECONDS: drop it, if Redis answers at all (else it expires by itself)."""
    try:
        queue_redis().delete(SYNC_PENDING_KEY)
    except QUEUE_ERRORS as exc:
        logger.warning("broker sync marker left to expire: %s", exc)
    return "no broker sync was queued"


def sync_broker_debounced(*, prove: bool, changes: bool = False) -> str:
    """The worker's side of `request_broker_sync`: clear the marker, then sync the pending
    changes (`changes`), or everything.

    With `prove` and a probe configured, a canary certificate is revoked on a new CRL first;
    once the broker refuses it, the revoked devices the sync covered (all revoked before that
    CRL, for a full sync or the ACL backend) are stamped as enforced. A sync that fails leaves
    the changes pending and asks again `BROKER_SYNC_RETRY_SECONDS` later.
    """
    if settings.CELERY_BROKER_URL:
        queue_redis().delete(SYNC_PENDING_KEY)
    try:
        return _sync_and_prove(prove=prove, devices=() if changes else None)
    except (BrokerSyncError, LockTimeout):
        if settings.CELERY_BROKER_URL:
            request_broker_sync(countdown=settings.BROKER_SYNC_RETRY_SECONDS)
        raise


#: Revoked devices not yet proven refused that one catch-up sends again, at most.
CATCH_UP_BATCH = 1000


def catch_up_broker(*, here: bool = True) -> str:
    """Bring the broker in step with every committed change, without a human: run at process
    start, every BROKER_CATCH_UP_SECONDS (celery beat, or the web process without workers),
    and cheap when there is nothing to do.

    Behind means: changes no sync has carried (`broker_lag`: a process killed between its commit
    and its push), a broker CRL that is not the CA's, or (with a probe) revoked devices whose
    refusal was never proven (a probe that was misconfigured then). Those are synced and proven
    with a canary, here or (`here` false: a process without the CA key) by a worker. One
    process at a time: the others wait for the lock, then find nothing left to do.
    """
    if not broker_set_up():
        return "no broker set up"  # a fresh install: nothing to catch up with, and no files to write
    with exclusive_lock(CATCH_UP_LOCK):
        lag = broker_lag()
        unproven = (
            list(_unproven_revocations().order_by("updated_at").values_list("pk", flat=True)[:CATCH_UP_BATCH])
            if probe_configured()
            else []
        )
        if not lag and not unproven:
            return "in step"
        if not lag and not probe_broker().canary_refused:
            # Only the proof is missing and the probe cannot get it (unreachable, or a broker
            # that lets the canary in, which /health reports): a new canary would prove nothing.
            return "unproven"
        logger.warning(
            "the broker is behind (%s): bringing it in step",
            "; ".join(lag + ([f"{len(unproven)} revocation(s) not proven"] if unproven else [])),
        )
        queue_changes(unproven)  # the dynamic-security backend syncs the devices it is told of
        if not here:
            return "requested" if request_broker_sync(countdown=0) else "queue unreachable"
        return _sync_and_prove(prove=True, devices=())


def _sync_and_prove(*, prove: bool, devices: tuple[str, ...] | None) -> str:
    if not (prove and probe_configured()) or unreachable_reason(probe_address()) is not None:
        # No proof to be had from a broker nothing answers for: a canary would only add a
        # revoked certificate and a CRL signature (every minute, from the catch-up) for nothing.
        return sync_broker(devices=devices).acl_sha256
    cutoff = timezone.now()  # revocations committed before this are on the canary's CRL
    canary = issue_sync_canary()
    revoke_certificates([canary.record], RevocationReason.UNSPECIFIED)
    enforced_at, covered = enforce_now(canary, devices=devices)
    if enforced_at is None:
        return "synced"
    revoked = _unproven_revocations().filter(updated_at__lt=cutoff)
    if covered is None:
        revoked.update(revocation_enforced_at=enforced_at)
    else:  # a live session ends with its device's own commands: only those the sync sent
        for start in range(0, len(covered), 500):
            revoked.filter(pk__in=covered[start : start + 500]).update(revocation_enforced_at=enforced_at)
    return "enforced"
