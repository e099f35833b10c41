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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from broker import dynsec
from broker.acl import ExtraRule, check_acl, render_acl
from broker.models import AclRule, BrokerSync
from broker.probe import SyncCanary, identity_files, wait_until_refused
from onboarding.errors import ServiceError
from onboarding.fs import write_atomically
from onboarding.locks import exclusive_lock
from pki.errors import CRLPublicationError
from pki.keystore import get_ca, keystore
from pki.models import Certificate, CertificatePurpose
from pki.services import check_crl, crl_path, crl_refresh_due, publish_crl

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


def active_device_ids() -> list[str]:
    return sorted(
        Certificate.objects.filter(purpose=CertificatePurpose.DEVICE)
        .active()
        .order_by()
        .values_list("common_name", flat=True)
        .distinct()
    )


def desired_state(*, with_active: bool = False) -> BrokerState:
    """Devices whose certificates are on the CRL and that hold no valid certificate are denied
    their topics (a re-issued device keeps them: its old certificate is on the CRL, its new one
    is valid). Extra rules count only for active devices."""
    device_certificates = Certificate.objects.filter(purpose=CertificatePurpose.DEVICE)
    # Start from the (small) revoked set and look up only those names among the valid
    # certificates: an exclusion subquery over every valid certificate grows with the fleet.
    on_crl = set(device_certificates.on_crl().order_by().values_list("common_name", flat=True).distinct())
    still_valid: set[str] = set()
    names = sorted(on_crl)
    for start in range(0, len(names), 500):  # bounded IN lists (SQLite allows few parameters)
        chunk = names[start : start + 500]
        still_valid.update(
            device_certificates.active().filter(common_name__in=chunk).values_list("common_name", flat=True)
        )
    revoked = on_crl - still_valid
    rules = AclRule.objects.filter(device__status="active").values_list("device_id", "topic_filter", "access")
    return BrokerState(
        revoked_device_ids=sorted(revoked),
        extra_rules=[
            ExtraRule(str(device_id), topic_filter, access) for device_id, topic_filter, access in rules
        ],
        active_device_ids=active_device_ids() if with_active else None,
    )


@dataclass(frozen=True)
class SyncResult:
    acl_sha256: str
    crl_number: int | None
    reloaded: bool
    synced_at: object


class BrokerBackend(Protocol):
    name: str
    #: Whether a newly registered device needs the broker told (a client per device).
    grants_on_register: bool
    #: Whether the backend needs the list of active devices in its state.
    needs_active_devices: bool

    def apply(self, state: BrokerState) -> tuple[str, int | None]: ...

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
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return data, int(number)


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


class MosquittoAclBackend:
    """Mosquitto with an acl_file and a crlfile, reloaded with SIGHUP (or a command)."""

    name = "mosquitto_acl"
    grants_on_register = False
    needs_active_devices = False

    def _render(self, state: BrokerState) -> str:
        text = render_acl(state.revoked_device_ids, state.extra_rules)
        try:
            check_acl(text)
        except ValueError as exc:
            raise BrokerSyncError(f"The rendered ACL failed its check ({exc}); the old ACL stays.") from None
        return text

    def apply(self, state: BrokerState) -> tuple[str, int | None]:
        # The CRL first and on its own: a problem with the ACL must never hold back revocations.
        number = copy_crl_to_broker()
        acl = self._render(state).encode()
        _write(Path(settings.BROKER_ACL_FILE), acl)
        return hashlib.sha256(acl).hexdigest(), number

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


class MosquittoDynsecBackend:
    """Mosquitto's dynamic-security plugin: a client and a role per device, kept in step by
    comparing the broker's clients and roles with the database on every sync."""

    name = "mosquitto_dynsec"
    grants_on_register = True
    needs_active_devices = True

    @contextmanager
    def _session(self) -> Iterator[dynsec.ControlSession]:
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
    def _rules(state: BrokerState) -> dict[str, list[ExtraRule]]:
        rules: dict[str, list[ExtraRule]] = {}
        for rule in state.extra_rules:
            rules.setdefault(rule.device_id, []).append(rule)
        return rules

    def apply(self, state: BrokerState) -> tuple[str, int | None]:
        number = copy_crl_to_broker()
        active = set(state.active_device_ids or [])
        with self._session() as session:
            clients, roles = self._existing(session)
            session.run(dynsec.plan(clients, roles, active, self._rules(state)))
        return hashlib.sha256("\n".join(sorted(active)).encode()).hexdigest(), number

    def drift(self, state: BrokerState) -> list[str]:
        found = []
        with self._session() as session:
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
    if settings.MOSQUITTO_PID_FILE:
        try:
            pid = int(Path(settings.MOSQUITTO_PID_FILE).read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise BrokerSyncError(
                f"Mosquitto could not be signalled through {settings.MOSQUITTO_PID_FILE}: {exc}."
            ) from None
        return True
    return False


def sync_broker(*, reload: bool = True) -> SyncResult:
    """Render, check, write and reload, once, under the broker lock."""
    with exclusive_lock("broker"):
        backend = get_backend()
        state = desired_state(with_active=backend.needs_active_devices)
        acl_sha256, crl_number = backend.apply(state)
        reloaded = reload_broker() if reload else False
        record = BrokerSync.objects.create(
            backend=backend.name,
            acl_sha256=acl_sha256,
            crl_number=crl_number,
            revoked_devices=len(state.revoked_device_ids),
            extra_rules=len(state.extra_rules),
            reloaded=reloaded,
        )
    return SyncResult(
        acl_sha256=acl_sha256, crl_number=crl_number, reloaded=reloaded, synced_at=record.synced_at
    )


def enforce_now(canary: SyncCanary | None = None) -> dt.datetime | None:
    """Sync and reload the broker. With a canary revoked in the same CRL, wait until the broker
    refuses it and return that moment: the broker is then known to enforce this CRL and the
    ACL written with it. None when there is no broker to reload or no proof."""
    result = sync_broker()
    if not result.reloaded or canary is None:
        return None
    if not wait_until_refused(canary):
        logger.warning("The broker was told to reload but still accepts a revoked canary.")
        return None
    return timezone.now()


def refresh_crl(*, force: bool = False) -> int | None:
    """Re-sign the CRL at half its validity (or now, with force) and give it to the broker.

    Returns the new CRL number, or None when the current CRL is still fresh.
    """
    if not force and not crl_refresh_due():
        return None
    record = publish_crl()
    sync_broker()
    return record.number


def broker_drift() -> list[str]:
    backend = get_backend()
    return backend.drift(desired_state(with_active=backend.needs_active_devices))


def grants_on_register() -> bool:
    return get_backend().grants_on_register


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
        sync_broker()  # a rule the broker cannot be given is not kept
    return rule


class InvalidAclRule(ServiceError):
    code = "invalid_rule"
    status = 400
