"""Keep the broker in step with the database: sync, reload, the proof of enforcement, and drift.

A sync renders what the broker must enforce (`broker.state`), gives it to the backend
(`broker.backends`) under a lock that holds across processes, and is followed by one reload.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.utils import timezone

from broker.address import pid_file
from broker.backends import get_backend
from broker.crl_copy import broker_enforces_crl, crl_drift
from broker.errors import BrokerSyncError
from broker.models import BrokerSync, PendingChange
from broker.probe import REVOKED, UNREACHABLE, SyncCanary, await_refusal, unreachable_reason
from broker.state import desired_state
from kernel.locks import exclusive_lock
from pki.crl import crl_number, crl_path, crl_refresh_due, publish_crl

logger = logging.getLogger(__name__)

#: One sync at a time, across processes: pending changes are read, applied and deleted under it.
BROKER_SYNC_LOCK = "broker"


@dataclass(frozen=True)
class SyncResult:
    acl_sha256: str
    crl_number: int | None
    reloaded: bool
    synced_at: object
    #: The devices a change brought in step; None when the whole broker was (a full sync, or
    #: a backend that renders everything on every change).
    devices: list[str] | None = None


def reload_broker() -> bool:
    """Tell the broker to reload; False when no way to reach it is configured."""
    if settings.BROKER_RELOAD_COMMAND:
        try:
            subprocess.run(
                shlex.split(settings.BROKER_RELOAD_COMMAND), check=True, timeout=15, capture_output=True
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise BrokerSyncError(f"BROKER_RELOAD_COMMAND failed: {exc}.") from None
        return True
    path = pid_file()
    if path:
        try:
            pid = int(Path(path).read_text().strip())
            _await_sighup_handler(pid)
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise BrokerSyncError(f"Mosquitto could not be signalled through {path}: {exc}.") from None
        return True
    return False


def catches_sighup(pid: int) -> bool | None:
    """Whether process `pid` has a handler for SIGHUP (Linux: the SigCgt mask of
    /proc/PID/status); None where that cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGHUP - 1) & 1)
    return None


def _await_sighup_handler(pid: int) -> None:
    """Mosquitto opens its listeners before it installs its signal handlers; SIGHUP in between
    takes the default action and stops the broker. So a broker still starting is given up to
    BROKER_TIMEOUT_SECONDS to handle it, and is not signalled if it does not: the change stays
    pending for the next sync."""
    deadline = time.monotonic() + settings.BROKER_TIMEOUT_SECONDS
    while catches_sighup(pid) is False:
        if time.monotonic() > deadline:
            raise BrokerSyncError(
                f"Mosquitto (pid {pid}) does not handle SIGHUP yet (still starting?): not signalled, "
                "so as not to stop it; the next sync reloads it."
            )
        time.sleep(0.02)


def queue_changes(devices: Collection[str | uuid.UUID]) -> None:
    """Record devices whose broker rights changed, for the next sync to carry (`PendingChange`)."""
    PendingChange.objects.bulk_create([PendingChange(device_id=str(device_id)) for device_id in set(devices)])


def sync_broker(*, reload: bool = True, devices: Collection[str | uuid.UUID] | None = None) -> SyncResult:
    """Render, check, write and reload, once, under the broker lock.

    With `devices` (a change; may be empty), those devices are queued as pending changes and
    every pending change is synced: the backend may bring only those devices in step (the
    dynamic-security backend does; the ACL file is always rendered whole). Without, a full
    sync. Pending changes are read before the database state and deleted once the sync has
    succeeded, so a failed sync leaves them for the next. The broker reloads when what it was
    given needs it (a new CRL, a new ACL file).
    """
    if devices:
        queue_changes(devices)
    with exclusive_lock(BROKER_SYNC_LOCK):
        pending = list(PendingChange.objects.values_list("pk", "device_id"))
        changed = sorted({device_id for _pk, device_id in pending})
        backend = get_backend()
        if devices is None:
            applied = backend.apply(desired_state(with_active=backend.needs_active_devices))
        else:
            applied = backend.apply_changes(changed)
        # Without a new CRL or ACL file there is nothing to reload: the broker already enforces them.
        reloaded = not applied.needs_reload or (reload and reload_broker())
        record = BrokerSync.objects.create(
            backend=backend.name,
            acl_sha256=applied.fingerprint,
            crl_number=applied.crl_number,
            revoked_devices=applied.revoked_devices,
            extra_rules=applied.extra_rules,
            changed_devices=applied.changed_devices,
            reloaded=reloaded,
        )
        done = [pk for pk, _device_id in pending]
        for start in range(0, len(done), 500):
            PendingChange.objects.filter(pk__in=done[start : start + 500]).delete()
    return SyncResult(
        acl_sha256=applied.fingerprint,
        crl_number=applied.crl_number,
        reloaded=reloaded,
        synced_at=record.synced_at,
        devices=None if applied.changed_devices is None else changed,
    )


def enforce_now(
    canary: SyncCanary | None = None, devices: Collection[str | uuid.UUID] | None = None
) -> tuple[dt.datetime | None, list[str] | None]:
    """Sync (the `devices` changed and those pending, or all) and reload the broker. With a
    canary revoked in the same CRL, wait until the broker refuses it: the broker is then known
    to enforce this CRL and the ACL written with it. Returns that moment (None when there is no
    broker to reload or no proof) and the devices the sync brought in step (None: all)."""
    result = sync_broker(devices=devices)
    if not result.reloaded or canary is None:
        return None, result.devices
    outcome, address = await_refusal(canary)
    if outcome == UNREACHABLE:
        logger.warning(
            "Could not connect to the broker at %s to prove the revocation (%s); it is on the CRL, "
            "but whether the broker enforces it is unknown.",
            address,
            unreachable_reason(address, timeout=1.0) or "it answers now",
        )
        return None, result.devices
    if outcome != REVOKED:
        logger.warning("The broker at %s was told to reload but still accepts a revoked canary.", address)
        return None, result.devices
    return timezone.now(), result.devices


def refresh_crl(*, force: bool = False) -> int | None:
    """Re-sign the CRL at half its validity (or now, with force) and give it to the broker.

    Returns the new CRL number, or None when the current CRL is still fresh.
    """
    if not force and not crl_refresh_due():
        return None
    record = publish_crl()
    sync_broker(devices=[])  # no device's rights change: only the CRL
    return record.number


def broker_lag() -> list[str]:
    """Cheap signs that the broker may not enforce what the database says, for the catch-up:
    changes no sync has carried (a process that died after its commit), a broker CRL that is
    not the CA's, or a current CRL the broker was never reloaded with. The hourly full sync
    looks for the rest of the drift (an ACL file or plugin edited by hand)."""
    found = []
    waiting = PendingChange.objects.values("device_id").distinct().count()
    if waiting:
        found.append(f"{waiting} device change(s) not given to the broker yet")
    found += crl_drift()
    if not found and (settings.BROKER_RELOAD_COMMAND or pid_file()):
        try:
            crl = x509.load_pem_x509_crl(crl_path().read_bytes())
            number = crl_number(crl)
        except (OSError, ValueError, x509.ExtensionNotFound):
            return ["the CA's CRL cannot be read"]
        if not broker_enforces_crl(number):
            found.append(f"the broker was not reloaded with CRL #{number}")
    return found


#: A change not given to the broker after this long is reported as drift.
PENDING_CHANGE_GRACE = dt.timedelta(minutes=5)


def broker_drift() -> list[str]:
    backend = get_backend()
    found = backend.drift(desired_state(with_active=backend.needs_active_devices))
    waiting = PendingChange.objects.filter(queued_at__lt=timezone.now() - PENDING_CHANGE_GRACE)
    count = waiting.values("device_id").distinct().count()
    if count:
        found.append(f"{count} device change(s) have waited over 5 minutes for the broker")
    return found


def grants_on_register() -> bool:
    return get_backend().grants_on_register


def revocation_effect() -> str:
    """What revoking a device does on the broker, for confirmations (tested per backend)."""
    try:
        effect = get_backend().live_session_effect
    except BrokerSyncError as exc:  # a confirmation page must still show; the revoke will say why
        return f"What the broker does with it cannot be said: {exc.message}"
    refused = "It cannot connect again: the broker refuses its certificate."
    return f"Its broker rights are removed. {effect} {refused}"
