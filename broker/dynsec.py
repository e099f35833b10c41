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
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings
from paho.mqtt.enums import CallbackAPIVersion

from broker.acl import ExtraRule
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

    def open(self, timeout: float = 5.0) -> None:
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise DynsecError(f"cannot connect to the broker's control topic: {exc}") from None
        self._client.loop_start()
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        if not self._subscribed.wait(timeout):
            self.close()
            raise DynsecError("the broker did not answer the administrator's subscription")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def run(self, commands: list[dict[str, Any]], timeout: float = 30.0) -> list[dict[str, Any]]:
        """Send commands in one message; return their responses (raise on any error)."""
        if not commands:
            return []
        tagged = [{**command, "correlationData": uuid.uuid4().hex} for command in commands]
        wanted = {command["correlationData"] for command in tagged}
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        with self._answered:
            done = self._answered.wait_for(
                lambda: wanted <= {response.get("correlationData") for response in self._responses}, timeout
            )
            if not done:
                raise DynsecError("the broker did not answer the dynamic-security commands in time")
            answers = [response for response in self._responses if response.get("correlationData") in wanted]
            self._responses = [response for response in self._responses if response not in answers]
        failures = [f"{answer['command']}: {answer['error']}" for answer in answers if answer.get("error")]
        if failures:
            raise DynsecError("; ".join(failures))
        return answers


@contextmanager
def control_session(certificate: str, key: str, password: bytes, ca_file: str) -> Iterator[ControlSession]:
    session = ControlSession(
        settings.BROKER_PROBE_HOST, settings.BROKER_PROBE_PORT, certificate, key, password, ca_file
    )
    session.open()
    try:
        yield session
    finally:
        session.close()


def plan(
    existing_clients: set[str], existing_roles: set[str], active: set[str], rules: dict[str, list[ExtraRule]]
) -> list[dict[str, Any]]:
    """The commands that make the broker's clients and roles what the database says (pure)."""
    commands: list[dict[str, Any]] = []
    devices_there = {name for name in existing_clients if DEVICE_ID.match(name)}
    for device_id in sorted(devices_there - active):
        # deleteClient also ends the device's live session at once.
        commands.append({"command": "deleteClient", "username": device_id})
    for role in sorted(existing_roles):
        device_id = role.removeprefix(DEVICE_ROLE_PREFIX).removeprefix(RULES_ROLE_PREFIX)
        if role.startswith((DEVICE_ROLE_PREFIX, RULES_ROLE_PREFIX)) and (
            device_id not in active or role.startswith(RULES_ROLE_PREFIX)
        ):
            commands.append({"command": "deleteRole", "rolename": role})
    for device_id in sorted(active - devices_there):
        if DEVICE_ROLE_PREFIX + device_id not in existing_roles:
            commands.append({"command": "createRole", **device_role(device_id)})
        commands.append(
            {
                "command": "createClient",
                "username": device_id,
                "roles": [{"rolename": DEVICE_ROLE_PREFIX + device_id}],
            }
        )
    # Rule roles are rebuilt on every sync, so a changed or removed rule is never left behind.
    for device_id in sorted(set(rules) & active):
        rule_role = rules_role(device_id, rules[device_id])
        commands.append({"command": "createRole", **rule_role})
        commands.append(
            {
                "command": "addClientRole",
                "username": device_id,
                "rolename": rule_role["rolename"],
                "priority": 1,
            }
        )
    return commands
