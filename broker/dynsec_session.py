"""The portal's administrator session on Mosquitto's dynamic-security plugin (paho-mqtt).

Commands go to the plugin's control topic and apply at once; `deleteClient` disconnects a live
session on the spot. What to send is planned in `broker.dynsec_plan`.
"""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings
from paho.mqtt.enums import CallbackAPIVersion

from broker.address import probe_address
from broker.dynsec_plan import CONTROL_TOPIC, DynsecError

RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"


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
