"""Mosquitto's dynamic-security plugin as a backend: one client and one role per device.

Changes go through the plugin's control topic and apply at once; `deleteClient` disconnects a
live session on the spot. With certificate logins the plugin does not authenticate (a deleted
client could connect again), so the CRL still stops a revoked device from coming back: the
backend copies the CRL and reloads the broker just as the ACL backend does.
"""

from __future__ import annotations

import glob
import json
import re
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings
from paho.mqtt.enums import CallbackAPIVersion

from broker.acl import ExtraRule
from broker.address import probe_address
from broker.rules import DEVICE_TOPIC_ROOT

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ADMIN_CN = "onboarding-dynsec-admin"
ADMIN_ROLE = "onboarding-admin"
DEVICE_ROLE_PREFIX = "device-"
RULES_ROLE_PREFIX = "rules-"
DEVICE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# An ACL access of the portal's rules, as the plugin's ACL types.
ACL_TYPES = {
    "read": [("subscribePattern", True), ("publishClientReceive", True)],
    "write": [("publishClientSend", True)],
    "readwrite": [("subscribePattern", True), ("publishClientReceive", True), ("publishClientSend", True)],
    "deny": [("subscribePattern", False), ("publishClientReceive", False), ("publishClientSend", False)],
}


class DynsecError(Exception):
    pass


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


def initial_config() -> dict[str, Any]:
    """The plugin's first configuration: only the portal's administrator, nothing allowed by default."""
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": [
            {"username": ADMIN_CN, "textname": "IoT onboarding portal", "roles": [{"rolename": ADMIN_ROLE}]}
        ],
        "groups": [],
        "roles": [
            {
                "rolename": ADMIN_ROLE,
                "acls": [
                    {"acltype": "publishClientSend", "topic": f"{CONTROL_TOPIC}/#", "allow": True},
                    {"acltype": "publishClientReceive", "topic": f"{CONTROL_TOPIC}/#", "allow": True},
                    {"acltype": "subscribePattern", "topic": f"{CONTROL_TOPIC}/#", "allow": True},
                ],
            }
        ],
    }


def device_role(device_id: str) -> dict[str, Any]:
    tree = f"{DEVICE_TOPIC_ROOT}/{device_id}/#"
    return {
        "rolename": DEVICE_ROLE_PREFIX + device_id,
        "acls": [
            {"acltype": acltype, "topic": tree, "allow": allow} for acltype, allow in ACL_TYPES["readwrite"]
        ],
    }


def rules_role(device_id: str, rules: list[ExtraRule]) -> dict[str, Any]:
    acls = [
        {"acltype": acltype, "topic": rule.topic_filter, "allow": allow, "priority": 1 if not allow else 0}
        for rule in rules
        for acltype, allow in ACL_TYPES[rule.access]
    ]
    return {"rolename": RULES_ROLE_PREFIX + device_id, "acls": acls}


class ControlSession:
    """A paho-mqtt connection as the portal's administrator, sending commands and awaiting answers."""

    def __init__(
        self, host: str, port: int, certificate: str, key: str, password: bytes, ca_file: str
    ) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"onboarding-admin-{uuid.uuid4().hex[:8]}"
        )
        # Bounds the TCP connection and the TLS handshake: a frozen broker accepts TCP and then
        # never completes the handshake.
        self._client.connect_timeout = settings.BROKER_TIMEOUT_SECONDS
        self._client.tls_set(
            ca_certs=ca_file, certfile=certificate, keyfile=key, keyfile_password=password.decode(),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )  # fmt: skip
        self._responses: list[dict[str, Any]] = []
        self._answered = threading.Condition()
        self._subscribed = threading.Event()
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._host, self._port = host, port

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._answered:
            self._responses.extend(json.loads(message.payload).get("responses", []))
            self._answered.notify_all()

    def open(self, timeout: float | None = None) -> None:
        """Connect and subscribe to the answers; waits BROKER_TIMEOUT_SECONDS for the SUBACK."""
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise DynsecError(
                f"cannot connect to the broker's control topic at {self._host}:{self._port}: {exc}"
            ) from None
        self._client.loop_start()
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        if not self._subscribed.wait(settings.BROKER_TIMEOUT_SECONDS if timeout is None else timeout):
            self.close()
            raise DynsecError("the broker did not answer the administrator's subscription")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def run(
        self, commands: list[dict[str, Any]], timeout: float | None = None, *, check: bool = True
    ) -> list[dict[str, Any]]:
        """Send commands in one message; return their responses in the commands' order (with
        `check`, raise on any error; without, errors are answers like the others)."""
        if not commands:
            return []
        tagged = [{**command, "correlationData": uuid.uuid4().hex} for command in commands]
        wanted = {command["correlationData"] for command in tagged}
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        with self._answered:
            done = self._answered.wait_for(
                lambda: wanted <= {response.get("correlationData") for response in self._responses},
                settings.BROKER_COMMAND_TIMEOUT_SECONDS if timeout is None else timeout,
            )
            if not done:
                raise DynsecError("the broker did not answer the dynamic-security commands in time")
            by_tag = {
                response["correlationData"]: response
                for response in self._responses
                if response.get("correlationData") in wanted
            }
            self._responses = [
                response for response in self._responses if response.get("correlationData") not in wanted
            ]
        answers = [by_tag[command["correlationData"]] for command in tagged]
        if not check:
            return answers
        failures = [f"{answer['command']}: {answer['error']}" for answer in answers if answer.get("error")]
        if failures:
            raise DynsecError("; ".join(failures))
        return answers


@contextmanager
def control_session(certificate: str, key: str, password: bytes, ca_file: str) -> Iterator[ControlSession]:
    address = probe_address()
    session = ControlSession(address.host, address.port, certificate, key, password, ca_file)
    session.open()
    try:
        yield session
    finally:
        session.close()


AclKey = tuple[str, str, bool, int]


@dataclass(frozen=True)
class Held:
    """What the broker holds for one device: its client's roles (None: no client) and the ACLs
    of those of the device's own roles (`device-<id>`, `rules-<id>`) that exist."""

    client_roles: frozenset[str] | None
    roles: dict[str, frozenset[AclKey]]


def acl_keys(acls: list[dict[str, Any]]) -> frozenset[AclKey]:
    """ACLs as comparable keys (the broker answers with the priority always set, 0 by default)."""
    return frozenset(
        (acl["acltype"], acl["topic"], bool(acl["allow"]), int(acl.get("priority", 0))) for acl in acls
    )


def role_names(device_id: str) -> tuple[str, str]:
    return DEVICE_ROLE_PREFIX + device_id, RULES_ROLE_PREFIX + device_id


def inspect(device_id: str) -> list[dict[str, Any]]:
    """The three read-only commands that tell what the broker holds for a device (`held`)."""
    device_role_name, rules_role_name = role_names(device_id)
    return [
        {"command": "getClient", "username": device_id},
        {"command": "getRole", "rolename": device_role_name},
        {"command": "getRole", "rolename": rules_role_name},
    ]


NOT_FOUND = {"Client not found", "Role not found"}


def held(answers: list[dict[str, Any]]) -> Held:
    """`Held` from the answers to `inspect`'s commands, in their order ("not found" is absence;
    any other error raises: a client the portal cannot see must not pass for a deleted one)."""
    failures = [
        answer["error"] for answer in answers if answer.get("error") and answer["error"] not in NOT_FOUND
    ]
    if failures:
        raise DynsecError("; ".join(failures))
    client_answer, *role_answers = answers
    client = client_answer.get("data", {}).get("client")
    roles = {
        answer["data"]["role"]["rolename"]: acl_keys(answer["data"]["role"].get("acls", []))
        for answer in role_answers
        if not answer.get("error")
    }
    client_roles = None if client is None else frozenset(role["rolename"] for role in client.get("roles", []))
    return Held(client_roles=client_roles, roles=roles)


def wanted_roles(device_id: str, active: bool, rules: list[ExtraRule]) -> list[dict[str, Any]]:
    """The roles an active device must hold, in the order of their priority (rules outrank)."""
    if not active:
        return []
    return [device_role(device_id)] + ([rules_role(device_id, rules)] if rules else [])


def plan_device(device_id: str, there: Held, active: bool, rules: list[ExtraRule]) -> list[dict[str, Any]]:
    """The commands that make what the broker holds for one device what the database says (pure).

    A revoked device loses its client: `deleteClient` ends its live session at once. Its roles
    grant nothing without a client, and each command makes Mosquitto 2.0's plugin rewrite its
    whole file, so they are left for the next full sync, which finds them without a client and
    deletes them. A role whose ACLs differ from the database is deleted and created again.
    """
    commands: list[dict[str, Any]] = []
    if not active and there.client_roles is not None:
        return [{"command": "deleteClient", "username": device_id}]
    wanted = {role["rolename"]: role for role in wanted_roles(device_id, active, rules)}
    created = set()
    for name, acls in sorted(there.roles.items()):
        if name not in wanted or acls != acl_keys(wanted[name]["acls"]):
            commands.append({"command": "deleteRole", "rolename": name})
    for name, role in wanted.items():
        if name not in there.roles or there.roles[name] != acl_keys(role["acls"]):
            commands.append({"command": "createRole", **role})
            created.add(name)
    if not active:
        return commands
    priorities = {name: 1 if name.startswith(RULES_ROLE_PREFIX) else 0 for name in wanted}
    if there.client_roles is None:
        roles = [{"rolename": name, "priority": priorities[name]} for name in wanted]
        commands.append({"command": "createClient", "username": device_id, "roles": roles})
        return commands
    for name in there.client_roles - set(wanted) - set(there.roles):
        # A role someone else gave the client (deleted roles of the device's own leave it anyway).
        commands.append({"command": "removeClientRole", "username": device_id, "rolename": name})
    for name in wanted:
        if name in created or name not in there.client_roles:
            commands.append(
                {
                    "command": "addClientRole",
                    "username": device_id,
                    "rolename": name,
                    "priority": priorities[name],
                }
            )
    return commands


def suspects(
    existing_clients: set[str], existing_roles: set[str], active: set[str], with_rules: set[str]
) -> set[str]:
    """The devices a full sync must look at closely: those whose client or roles, by name, are not
    what the database says, and every device with rules (their ACLs must be compared)."""
    clients = {name for name in existing_clients if DEVICE_ID.match(name)}
    device_roles, rules_roles = set(), set()
    for role in existing_roles:
        if role.startswith(DEVICE_ROLE_PREFIX):
            device_roles.add(role.removeprefix(DEVICE_ROLE_PREFIX))
        elif role.startswith(RULES_ROLE_PREFIX):
            rules_roles.add(role.removeprefix(RULES_ROLE_PREFIX))
    return (clients ^ active) | (device_roles ^ active) | rules_roles | (with_rules & active)
