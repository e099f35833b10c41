"""A real Mosquitto, configured by `mosquitto_config`, and a real paho-mqtt device client."""

from __future__ import annotations

import io
import queue
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pyzipper
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.helpers import free_port

NOT_AUTHORIZED = 0x87
# PUBACK reason codes of an accepted publish: success, or success with no one subscribed.
ACCEPTED = {0x00, 0x10}


@dataclass
class Broker:
    host: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def log(self) -> str:
        return (self.directory / "mosquitto.log").read_text(errors="replace")


def start_mosquitto(directory: Path, port: int) -> Broker:
    log = (directory / "mosquitto.log").open("wb")
    process = subprocess.Popen(["mosquitto", "-c", str(directory / "mosquitto.conf")], stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("mosquitto exited: " + (directory / "mosquitto.log").read_text())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return Broker(host="127.0.0.1", port=port, directory=directory, process=process)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("mosquitto did not open its port")


def stop_mosquitto(broker: Broker) -> None:
    broker.process.terminate()
    try:
        broker.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        broker.process.kill()


@dataclass(frozen=True)
class Credentials:
    device_id: str
    directory: Path

    @property
    def certificate(self) -> Path:
        return self.directory / "device.crt"

    @property
    def key(self) -> Path:
        return self.directory / "device.key"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"


def credentials_from_answer(client: Any, answer: dict[str, Any], directory: Path) -> Credentials:
    """Download the device's real bundle and unpack it, as a device maker would."""
    response = client.get(urlsplit(answer["download_url"]).path)
    assert response.status_code == 200, response.content
    directory.mkdir(parents=True, exist_ok=True)
    with pyzipper.AESZipFile(io.BytesIO(response.content)) as archive:
        archive.setpassword(answer["bundle_password"].encode())
        archive.extractall(directory)
    return Credentials(device_id=answer["id"], directory=directory)


def new_device(api: Any, tmp_path: Path, name: str) -> Credentials:
    """Register a device through the API (EC key made by the portal) and unpack its bundle."""
    response = api.post("/register", {"name": name, "key_type": "ec-p256"}, format="json")
    assert response.status_code == 201, response.content
    return credentials_from_answer(api, response.json(), tmp_path / name)


class DeviceClient:
    """A paho-mqtt MQTT v5 client over mutual TLS, with blocking helpers for tests."""

    def __init__(self, broker: Broker, credentials: Credentials, *, ca_file: Path | None = None) -> None:
        self.broker = broker
        self.credentials = credentials
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=credentials.device_id, protocol=mqtt.MQTTv5
        )
        self.client.tls_set(
            ca_certs=str(ca_file or credentials.ca),
            certfile=str(credentials.certificate),
            keyfile=str(credentials.key),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        self.connected = threading.Event()
        self.connect_result: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.acks: dict[int, queue.Queue[int]] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.subscribed = threading.Event()

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        self.connect_result = reason
        if not reason.is_failure:
            self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.messages.put((message.topic, message.payload))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        self.subscribed.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        with self._lock:
            self.acks.setdefault(mid, queue.Queue()).put(reason.value)

    def connect(self, timeout: float = 5.0) -> bool:
        """True when the broker accepted the connection (CONNACK success) within the timeout."""
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False
        self.client.loop_start()
        end = time.monotonic() + timeout
        # A refused TLS handshake shows as a dropped connection: stop waiting then.
        while time.monotonic() < end and not self.connected.is_set() and not self.disconnected.is_set():
            self.connected.wait(0.01)
        accepted = self.connected.is_set()
        if not accepted:
            self.close()
        return accepted

    def publish(self, topic: str, payload: bytes = b"x", timeout: float = 5.0) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (see ACCEPTED; 0x87 not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        with self._lock:
            acks = self.acks.setdefault(info.mid, queue.Queue())
        return acks.get(timeout=timeout)

    def publish_or_none(self, topic: str, payload: bytes = b"x", timeout: float = 1.0) -> int | None:
        """Like publish, but None when no PUBACK comes (for example, the session was cut)."""
        try:
            return self.publish(topic, payload, timeout)
        except queue.Empty:
            return None

    def subscribe(self, topic: str, timeout: float = 5.0) -> None:
        """Subscribe and wait for the broker's SUBACK."""
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        if not self.subscribed.wait(timeout):
            raise TimeoutError(f"no SUBACK for {topic}")

    def next_message(self, timeout: float) -> tuple[str, bytes] | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def configured_broker(settings: Any, work: Path, backend: str = "mosquitto_acl") -> Broker:
    """Point the portal at a broker of its own in `work`, write its configuration with
    `mosquitto_config`, start Mosquitto with it and wait until it enforces the CRL."""
    import io

    from django.core.management import call_command

    from broker.probe import probe_broker
    from broker.sync import reload_broker, sync_broker

    port = free_port()
    directory = work / "broker"
    settings.BROKER_BACKEND = backend
    settings.BROKER_ACL_FILE = directory / "mosquitto.acl"
    settings.BROKER_CRL_FILE = directory / "crl.pem"
    settings.MOSQUITTO_PID_FILE = str(directory / "mosquitto.pid")
    settings.BROKER_PROBE_DIR = work / "probe"
    # No address settings: the portal finds the broker where `mosquitto_config` says it wrote it.
    settings.BROKER_PUBLIC_HOST = settings.BROKER_PROBE_HOST = None
    settings.BROKER_PUBLIC_PORT = settings.BROKER_PROBE_PORT = None
    call_command("mosquitto_config", "--out", str(directory), "--port", str(port), "--bind", "127.0.0.1",
                 "--backend", backend, stdout=io.StringIO())  # fmt: skip
    broker = start_mosquitto(directory, port)
    sync_broker()
    # The sync ends with a reload (SIGHUP, asynchronous): go on once the broker enforces the CRL.
    # Generous: on a loaded 2-core machine the reload and the probe's handshakes take a while.
    # A reload signal that raced the broker's start-up is sent again every few seconds.
    deadline = time.monotonic() + 30
    resend = time.monotonic() + 3
    while not (result := probe_broker()).healthy:
        if time.monotonic() > deadline:
            exited = broker.process.poll()
            stop_mosquitto(broker)
            state = "running" if exited is None else f"exited with {exited}"
            raise RuntimeError(
                f"the broker never enforced the CRL ({result}; mosquitto {state}): " + broker.log()
            )
        if time.monotonic() > resend:
            reload_broker()
            resend = time.monotonic() + 3
        time.sleep(0.05)
    return broker
