"""Mosquitto's dynamic-security plugin as a backend: one client and one role per device.

Changes go through the plugin's control topic (`broker.dynsec_session`) and apply at once;
`deleteClient` disconnects a live session on the spot. With certificate logins the plugin does
not authenticate (a deleted client could connect again), so the CRL still stops a revoked
device from coming back: the backend copies the CRL and reloads the broker just as the ACL
backend does. What to send is planned, purely, in `broker.dynsec_plan`.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from broker import dynsec_plan
from broker.acl import ExtraRule
from broker.backends import Applied, BrokerBackend
from broker.crl_copy import broker_enforces_crl, copy_crl_if_changed, copy_crl_to_broker, crl_drift
from broker.dynsec_plan import DynsecError
from broker.dynsec_session import ControlSession, control_session
from broker.errors import BrokerSyncError
from broker.probe import identity_files
from broker.state import BrokerState, active_device_ids, extra_rules
from kernel.locks import exclusive_lock, lock_if_free
from pki.keystore import keystore

#: One administrator session at a time on the dynamic-security broker (see `_session`).
ADMIN_SESSION_LOCK = "broker-admin-session"
#: The probe identity the portal's administrator session uses (broker/probe.py).
DYNSEC_ADMIN = "dynsec-admin"
# Devices whose broker state one message asks for (three read-only commands each).
INSPECT_BATCH = 200


def plugin_path() -> str:
    """The plugin shipped with Debian's mosquitto (the directory depends on the architecture)."""
    configured: str = settings.MOSQUITTO_DYNSEC_PLUGIN
    if configured:
        return configured
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")) + sorted(
        glob.glob("/usr/lib/mosquitto_dynamic_security.so")
    )
    if not found:
        raise DynsecError("mosquitto_dynamic_security.so was not found; set MOSQUITTO_DYNSEC_PLUGIN.")
    return found[0]


class MosquittoDynsecBackend(BrokerBackend):
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
    def _session(self) -> Iterator[ControlSession]:
        # The broker names every session after its certificate (use_username_as_clientid), so
        # two administrator sessions at once (a health check during a sync, two hosts) would end
        # each other, losing commands in flight: they take turns, across processes.
        with exclusive_lock(ADMIN_SESSION_LOCK), self._open_session() as session:
            yield session

    @contextmanager
    def _open_session(self) -> Iterator[ControlSession]:
        certificate, key, password = identity_files(DYNSEC_ADMIN)
        try:
            with control_session(
                str(certificate), str(key), password, str(keystore().certificate_path)
            ) as session:
                yield session
        except DynsecError as exc:
            raise BrokerSyncError(
                f"The broker's dynamic-security plugin refused or did not answer: {exc}."
            ) from None

    @staticmethod
    def _existing(session: ControlSession) -> tuple[set[str], set[str]]:
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
        session: ControlSession,
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
            asks = [command for device_id in chunk for command in dynsec_plan.inspect(device_id)]
            answers = session.run(asks, check=False)
            width = len(answers) // len(chunk)
            for index, device_id in enumerate(chunk):
                there = dynsec_plan.held(answers[index * width : (index + 1) * width])
                session.run(
                    dynsec_plan.plan_device(device_id, there, device_id in active, rules.get(device_id, []))
                )

    def apply(self, state: BrokerState) -> Applied:
        number = copy_crl_to_broker()
        active = set(state.active_device_ids or [])
        rules = self._rules(state.extra_rules)
        with self._session() as session:
            clients, roles = self._existing(session)
            suspects = dynsec_plan.suspects(clients, roles, active, set(rules))
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
        device_ids = sorted({device_id for device_id in device_ids if dynsec_plan.DEVICE_ID.match(device_id)})
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
        there = {name for name in clients if dynsec_plan.DEVICE_ID.match(name)}
        active = set(state.active_device_ids or [])
        if there != active:
            found.append(
                f"the broker's clients differ from the active devices ({len(active - there)} missing, "
                f"{len(there - active)} too many)"
            )
        return found + crl_drift()
