"""Keep the broker in step with the database: topic rights (ACL), the CRL, and the reload.

Everything the broker is given is rendered wholly from the database, checked, written
atomically under a lock that holds across processes, and followed by one reload. A file that
fails its check is never put in place: the broker keeps enforcing the previous one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shlex
import signal
import subprocess
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from broker import dynsec
from broker.acl import ExtraRule, check_acl, render_acl
from broker.address import pid_file
from broker.models import AclRule, BrokerSync, PendingChange
from broker.probe import REVOKED, UNREACHABLE, SyncCanary, await_refusal, identity_files, unreachable_reason
from kernel.errors import ServiceError
from kernel.fs import write_atomically
from kernel.locks import exclusive_lock, lock_if_free
from pki.crl import check_crl, crl_number, crl_path, crl_refresh_due, publish_crl
from pki.errors import CRLPublicationError
from pki.keystore import get_ca, keystore
from pki.models import Certificate, CertificatePurpose, CertificateStatus

logger = logging.getLogger(__name__)


class BrokerSyncError(ServiceError):
    code = "broker_sync_failed"
    status = 503


@dataclass(frozen=True)
class BrokerState:
    """What the broker must enforce, read from the database."""

    revoked_device_ids: list[str]
    extra_rules: list[ExtraRule]
    #: Devices holding a valid certificate (only backends with a client per device need them).
    active_device_ids: list[str] | None = None


def _among(queryset: QuerySet[Any], field: str, values: Sequence[str]) -> Iterator[Any]:
    """`queryset.filter(field__in=values)` in bounded IN lists (SQLite allows few parameters)."""
    for start in range(0, len(values), 500):
        yield from queryset.filter(**{f"{field}__in": values[start : start + 500]})


def active_device_ids(among: Sequence[str] | None = None) -> list[str]:
    """Devices holding a valid certificate: all of them, or those of `among` (a change)."""
    devices = Certificate.objects.filter(purpose=CertificatePurpose.DEVICE).order_by()
    if among is None:
        return sorted(devices.active().values_list("common_name", flat=True).distinct())
    # By name, then validity here: told the status too, SQLite's planner takes the
    # (status, not_after) index and reads every valid certificate of the fleet for a few names.
    now = timezone.now()
    rows = _among(devices.values_list("common_name", "status", "not_after"), "common_name", among)
    return sorted(
        {name for name, status, not_after in rows if status == CertificateStatus.ACTIVE and not_after > now}
    )


def extra_rules(among: Sequence[str] | None = None) -> list[ExtraRule]:
    """The rules of active devices (all, or those of `among`)."""
    rules = AclRule.objects.filter(device__status="active").values_list("device_id", "topic_filter", "access")
    found = rules if among is None else _among(rules, "device_id", among)
    return [ExtraRule(str(device_id), topic_filter, access) for device_id, topic_filter, access in found]


def desired_state(*, with_active: bool = False) -> BrokerState:
    """Devices whose certificates are on the CRL and that hold no valid certificate are denied
    their topics (a re-issued device keeps them: its old certificate is on the CRL, its new one
    is valid). Extra rules count only for active devices."""
    device_certificates = Certificate.objects.filter(purpose=CertificatePurpose.DEVICE)
    # Start from the (small) revoked set and look up only those names among the valid
    # certificates: an exclusion subquery over every valid certificate grows with the fleet.
    on_crl = set(device_certificates.on_crl().order_by().values_list("common_name", flat=True).distinct())
    still_valid = set(active_device_ids(among=sorted(on_crl)))
    return BrokerState(
        revoked_device_ids=sorted(on_crl - still_valid),
        extra_rules=extra_rules(),
        active_device_ids=active_device_ids() if with_active else None,
    )


@dataclass(frozen=True)
class Applied:
    """What a backend gave the broker."""

    #: A digest of what the broker now holds (the ACL file; the dynamic-security clients).
    fingerprint: str
    crl_number: int | None
    revoked_devices: int
    extra_rules: int
    #: False when the broker's CRL was already current and nothing else needs a reload.
    needs_reload: bool = True
    #: How many devices a change touched; None for a full sync.
    changed_devices: int | None = None


@dataclass(frozen=True)
class SyncResult:
    acl_sha256: str
    crl_number: int | None
    reloaded: bool
    synced_at: object
    #: The devices a change brought in step; None when the whole broker was (a full sync, or
    #: a backend that renders everything on every change).
    devices: list[str] | None = None


class BrokerBackend(Protocol):
    name: str
    #: What revoking a device does to its live session on this backend, as the portal says it.
    live_session_effect: str
    #: Whether a newly registered device needs the broker told (a client per device).
    grants_on_register: bool
    #: Whether the backend needs the list of active devices in its state.
    needs_active_devices: bool

    def apply(self, state: BrokerState) -> Applied: ...

    def apply_changes(self, device_ids: list[str]) -> Applied:
        """Bring the broker in step for these devices (their registration, revocation, rules)."""
        ...

    def drift(self, state: BrokerState) -> list[str]: ...


def _checked_crl() -> tuple[bytes, int]:
    """The CA's current CRL, refused unless it parses, is signed by the CA and is not stale."""
    try:
        data = crl_path().read_bytes()
        crl = x509.load_pem_x509_crl(data)
    except (OSError, ValueError) as exc:
        raise BrokerSyncError(
            f"The CA's CRL cannot be read ({exc}); the broker keeps its previous CRL."
        ) from None
    try:
        check_crl(crl, get_ca().certificate, timezone.now())
    except CRLPublicationError as exc:
        raise BrokerSyncError(f"{exc.message} The broker keeps its previous CRL.") from None
    return data, crl_number(crl)


def _write(path: Path, data: bytes) -> None:
    try:
        write_atomically(path, data, mode=0o644)
    except OSError as exc:
        raise BrokerSyncError(f"The broker file {path.name} could not be written: {exc.strerror}.") from None


def crl_drift() -> list[str]:
    try:
        if Path(settings.BROKER_CRL_FILE).read_bytes() != crl_path().read_bytes():
            return ["the broker's CRL is not the CA's current CRL"]
    except OSError:
        return ["the broker's CRL or the CA's CRL is missing"]
    return []


def copy_crl_to_broker() -> int:
    """Give the broker the CA's current CRL (checked); returns its number."""
    crl, number = _checked_crl()
    _write(Path(settings.BROKER_CRL_FILE), crl)
    return number


def broker_enforces_crl(number: int) -> bool:
    """Whether the last sync gave the broker this CRL and had it reloaded (or needed no reload)."""
    last = BrokerSync.objects.order_by("-pk").values_list("crl_number", "reloaded").first()
    return last is not None and last == (number, True)


def copy_crl_if_changed() -> tuple[int, bool]:
    """The CA's current CRL's number, and whether it had to be given to the broker now (the
    broker's copy differed); an unchanged copy is neither checked again nor rewritten."""
    try:
        current = crl_path().read_bytes()
        if Path(settings.BROKER_CRL_FILE).read_bytes() == current:
            crl = x509.load_pem_x509_crl(current)
            return crl_number(crl), False
    except (OSError, ValueError, x509.ExtensionNotFound):
        pass  # copy_crl_to_broker says what is wrong
    return copy_crl_to_broker(), True


class MosquittoAclBackend:
    """Mosquitto with an acl_file and a crlfile, reloaded with SIGHUP (or a command)."""

    name = "mosquitto_acl"
    # Mosquitto cannot end a session from an ACL file: the reload takes the device's topics away.
    live_session_effect = (
        "A live MQTT session of the device stays connected but loses its topics: its publishes are "
        "refused (MQTT 5 PUBACK reason 135, not authorized) and messages on its topics no longer "
        "reach it."
    )
    grants_on_register = False
    needs_active_devices = False

    def _render(self, state: BrokerState) -> str:
        text = render_acl(state.revoked_device_ids, state.extra_rules)
        try:
            check_acl(text)
        except ValueError as exc:
            raise BrokerSyncError(f"The rendered ACL failed its check ({exc}); the old ACL stays.") from None
        return text

    def apply(self, state: BrokerState) -> Applied:
        # The CRL first and on its own: a problem with the ACL must never hold back revocations.
        number = copy_crl_to_broker()
        acl = self._render(state).encode()
        _write(Path(settings.BROKER_ACL_FILE), acl)
        return Applied(
            hashlib.sha256(acl).hexdigest(), number, len(state.revoked_device_ids), len(state.extra_rules)
        )

    def apply_changes(self, device_ids: list[str]) -> Applied:
        # The ACL file is one file: a change is a full render (it grows with revocations and
        # rules, not with the fleet: devices/{id}/# is one pattern line for every device).
        return self.apply(desired_state())

    def drift(self, state: BrokerState) -> list[str]:
        found = []
        expected_acl = self._render(state).encode()
        try:
            on_disk = Path(settings.BROKER_ACL_FILE).read_bytes()
        except OSError:
            on_disk = None
        if on_disk != expected_acl:
            found.append("the ACL file differs from what the database says")
        return found + crl_drift()


#: One administrator session at a time on the dynamic-security broker (see `_session`).
ADMIN_SESSION_LOCK = "broker-admin-session"


class MosquittoDynsecBackend:
    """Mosquitto's dynamic-security plugin: a client and a role per device.

    A change (registration, revocation, a rule) looks at and sends commands for the devices it
    touched only, so the portal's side of it does not grow with the fleet. The full sync (the
    hourly reconciliation, `broker_sync`) lists every client and role and looks closely at the
    devices whose names disagree with the database and at those with rules.
    """

    name = "mosquitto_dynsec"
    live_session_effect = "A live MQTT session of the device is ended at once (its broker client is deleted)."
    grants_on_register = True
    needs_active_devices = True

    @contextmanager
    def _session(self) -> Iterator[dynsec.ControlSession]:
        # The broker names every session after its certificate (use_username_as_clientid), so
        # two administrator sessions at once (a health check during a sync, two hosts) would end
        # each other, losing commands in flight: they take turns, across processes.
        with exclusive_lock(ADMIN_SESSION_LOCK), self._open_session() as session:
            yield session

    @contextmanager
    def _open_session(self) -> Iterator[dynsec.ControlSession]:
        certificate, key, password = identity_files(DYNSEC_ADMIN)
        try:
            with dynsec.control_session(
                str(certificate), str(key), password, str(keystore().certificate_path)
            ) as session:
                yield session
        except dynsec.DynsecError as exc:
            raise BrokerSyncError(
                f"The broker's dynamic-security plugin refused or did not answer: {exc}."
            ) from None

    @staticmethod
    def _existing(session: dynsec.ControlSession) -> tuple[set[str], set[str]]:
        answers = session.run(
            [
                {"command": "listClients", "verbose": False, "count": -1},
                {"command": "listRoles", "verbose": False, "count": -1},
            ]
        )
        by_command = {answer["command"]: answer.get("data", {}) for answer in answers}
        return set(by_command["listClients"].get("clients", [])), set(
            by_command["listRoles"].get("roles", [])
        )

    @staticmethod
    def _rules(rules: list[ExtraRule]) -> dict[str, list[ExtraRule]]:
        by_device: dict[str, list[ExtraRule]] = {}
        for rule in rules:
            by_device.setdefault(rule.device_id, []).append(rule)
        return by_device

    @staticmethod
    def _reconcile(
        session: dynsec.ControlSession,
        device_ids: list[str],
        active: set[str],
        rules: dict[str, list[ExtraRule]],
    ) -> None:
        """Ask what the broker holds for these devices, then send each device's commands.

        One message per device: Mosquitto 2.0's plugin rewrites its whole configuration file
        after every command that changes it, so a message's answer takes longer the larger the
        fleet; waiting device by device keeps each wait bounded.
        """
        for start in range(0, len(device_ids), INSPECT_BATCH):
            chunk = device_ids[start : start + INSPECT_BATCH]
            answers = session.run([command for device_id in chunk for command in dynsec.inspect(device_id)],
                                  check=False)  # fmt: skip
            width = len(answers) // len(chunk)
            for index, device_id in enumerate(chunk):
                there = dynsec.held(answers[index * width : (index + 1) * width])
                session.run(
                    dynsec.plan_device(device_id, there, device_id in active, rules.get(device_id, []))
                )

    def apply(self, state: BrokerState) -> Applied:
        number = copy_crl_to_broker()
        active = set(state.active_device_ids or [])
        rules = self._rules(state.extra_rules)
        with self._session() as session:
            clients, roles = self._existing(session)
            suspects = dynsec.suspects(clients, roles, active, set(rules))
            self._reconcile(session, sorted(suspects), active, rules)
        return Applied(
            hashlib.sha256("\n".join(sorted(active)).encode()).hexdigest(),
            number,
            len(state.revoked_device_ids),
            len(state.extra_rules),
        )

    def apply_changes(self, device_ids: list[str]) -> Applied:
        number, copied = copy_crl_if_changed()
        # The broker's copy may be current while the broker never loaded it (a reload that
        # failed after the copy): reload unless the last sync says it enforces this CRL.
        crl_changed = copied or not broker_enforces_crl(number)
        device_ids = sorted({device_id for device_id in device_ids if dynsec.DEVICE_ID.match(device_id)})
        active = set(active_device_ids(among=device_ids))
        rules = extra_rules(among=device_ids)
        if device_ids:
            with self._session() as session:
                self._reconcile(session, device_ids, active, self._rules(rules))
        held = "\n".join(f"{device_id} {device_id in active}" for device_id in device_ids)
        return Applied(
            hashlib.sha256(held.encode()).hexdigest(),
            number,
            revoked_devices=len(set(device_ids) - active),
            extra_rules=len(rules),
            needs_reload=crl_changed,
            changed_devices=len(device_ids),
        )

    def drift(self, state: BrokerState) -> list[str]:
        found = []
        # Never waits behind a sync (nor makes a revocation's push wait behind it): /health is
        # anonymous and must answer within seconds. A sync at work is bringing the broker in
        # step; the next look compares again.
        with lock_if_free(ADMIN_SESSION_LOCK) as free:
            if not free:
                return crl_drift()
            with self._open_session() as session:
                clients, _roles = self._existing(session)
        there = {name for name in clients if dynsec.DEVICE_ID.match(name)}
        active = set(state.active_device_ids or [])
        if there != active:
            found.append(
                f"the broker's clients differ from the active devices ({len(active - there)} missing, "
                f"{len(there - active)} too many)"
            )
        return found + crl_drift()


DYNSEC_ADMIN = "dynsec-admin"
# Devices whose broker state one message asks for (three read-only commands each).
INSPECT_BATCH = 200


def get_backend() -> BrokerBackend:
    backends: dict[str, type[BrokerBackend]] = {
        MosquittoAclBackend.name: MosquittoAclBackend,
        MosquittoDynsecBackend.name: MosquittoDynsecBackend,
    }
    try:
        return backends[settings.BROKER_BACKEND]()
    except KeyError:
        names = ", ".join(sorted(backends))
        raise BrokerSyncError(f"BROKER_BACKEND '{settings.BROKER_BACKEND}' is not one of: {names}.") from None


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
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise BrokerSyncError(f"Mosquitto could not be signalled through {path}: {exc}.") from None
        return True
    return False


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
    with exclusive_lock("broker"):
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


def add_acl_rule(device_id: str, topic_filter: str, access: str, *, shared: bool = False) -> AclRule:
    """Give a device a right beyond its own tree, validated, and push it to the broker."""
    rule = AclRule(device_id=device_id, topic_filter=topic_filter, access=access, shared=shared)
    try:
        rule.full_clean()
    except ValidationError as exc:
        messages = "; ".join(message for messages in exc.message_dict.values() for message in messages)
        raise InvalidAclRule(messages) from None
    with transaction.atomic():
        rule.save()
        sync_broker(devices=[device_id])  # a rule the broker cannot be given is not kept
    return rule


class InvalidAclRule(ServiceError):
    code = "invalid_rule"
    status = 400
