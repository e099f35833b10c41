"""Issue #21 item 2: one source of truth for the broker's address.

`mosquitto_config --port P` records the listener it wrote; the bundle (device.json, README.txt),
the health probe and the revocation check all use it. When nothing answers there, the message
names the host and port that were tried, and the revocation does not wait out its deadline.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pyzipper
from django.core.management import call_command
from rest_framework.test import APIClient

from broker.address import pid_file, public_address
from broker.errors import BrokerSyncError
from broker.probe import probe_broker
from broker.sync import catches_sighup, reload_broker
from pki.keystore import CertificateAuthority
from tests.support.helpers import free_port
from tests.support.mosquitto import (
    ACCEPTED,
    DeviceClient,
    new_device,
    start_mosquitto,
    stop_mosquitto,
)


@pytest.fixture
def no_address_settings(ca: CertificateAuthority, settings: Any, tmp_path: Path) -> Path:
    """A fresh portal as `make run` has it: no BROKER_PUBLIC_*/BROKER_PROBE_* in the environment."""
    directory = tmp_path / "broker"
    settings.BROKER_ACL_FILE = directory / "mosquitto.acl"
    settings.BROKER_CRL_FILE = directory / "crl.pem"
    settings.MOSQUITTO_PID_FILE = str(directory / "mosquitto.pid")
    settings.BROKER_PROBE_DIR = tmp_path / "probe"
    settings.BROKER_PUBLIC_HOST = settings.BROKER_PROBE_HOST = None
    settings.BROKER_PUBLIC_PORT = settings.BROKER_PROBE_PORT = None
    return directory


def write_config(directory: Path, port: int, *hostnames: str) -> str:
    out = io.StringIO()
    names = [argument for name in hostnames for argument in ("--hostname", name)]
    call_command("mosquitto_config", "--out", str(directory), "--port", str(port), "--bind", "127.0.0.1",
                 *names, stdout=out, stderr=out)  # fmt: skip
    return out.getvalue()


def bundle_files(api: APIClient, answer: dict[str, Any]) -> dict[str, bytes]:
    response = api.get(urlsplit(answer["download_url"]).path)
    assert response.status_code == 200
    with pyzipper.AESZipFile(io.BytesIO(response.content)) as archive:
        archive.setpassword(answer["bundle_password"].encode())
        return {name: archive.read(name) for name in archive.namelist()}


def test_a_broker_written_on_another_port_is_the_one_everything_uses(
    no_address_settings: Path, operator_api: APIClient, tmp_path: Path
) -> None:
    port = free_port()
    assert port != 8883
    output = write_config(no_address_settings, port)
    assert f"Devices will connect to 127.0.0.1:{port}." in output
    broker = start_mosquitto(no_address_settings, port)
    try:
        # The bundle tells the device the port the broker listens on.
        answer = operator_api.post(
            "/register", {"name": "meter", "key_type": "ec-p256"}, format="json"
        ).json()
        files = bundle_files(operator_api, answer)
        device_json = json.loads(files["device.json"])
        assert (device_json["broker"]["host"], device_json["broker"]["port"]) == ("127.0.0.1", port)
        assert f"Broker: 127.0.0.1:{port}," in files["README.txt"].decode()
        assert f"its MQTT client id is always\n{answer['id']}, whatever" in files["README.txt"].decode()

        # The health probe reaches it.
        deadline = time.monotonic() + 20
        while not probe_broker().healthy:
            assert time.monotonic() < deadline, broker.log()
            time.sleep(0.1)
        health = APIClient().get("/health").json()["checks"]["broker"]
        assert health == {"status": "ok", "probe": "monitor connected, revoked canary refused"}

        # The device connects with what its bundle says, and its revocation is proven there.
        device = new_device(operator_api, tmp_path, "sensor")
        client = DeviceClient(broker, device)
        assert client.connect(), broker.log()
        assert client.publish(f"devices/{device.device_id}/telemetry") in ACCEPTED
        client.close()
        revoked = operator_api.post(f"/revoke/{device.device_id}", {"reason": "keyCompromise"}, format="json")
        assert revoked.status_code == 200
        assert revoked.json()["revocation_enforced_at"] is not None
    finally:
        stop_mosquitto(broker)


def test_settings_override_the_recorded_listener(no_address_settings: Path, settings: Any) -> None:
    port = free_port()
    write_config(no_address_settings, port)
    assert str(public_address()) == f"127.0.0.1:{port}"
    # Behind a NAT or load balancer: devices go to the public address, the portal to the listener.
    settings.BROKER_PUBLIC_HOST, settings.BROKER_PUBLIC_PORT = "mqtt.example.com", 8883
    settings.BROKER_PROBE_HOST, settings.BROKER_PROBE_PORT = "127.0.0.1", port
    assert str(public_address()) == "mqtt.example.com:8883"
    output = write_config(no_address_settings, port, "127.0.0.1")
    assert (
        "Warning: BROKER_PUBLIC_HOST=mqtt.example.com is not among the broker certificate's names" in output
    )
    assert f"Warning: BROKER_PUBLIC_PORT=8883 overrides the port {port} written here" in output


def test_an_unreachable_broker_is_named_with_the_address_tried(
    no_address_settings: Path, operator_api: APIClient, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    port = free_port()
    write_config(no_address_settings, port)  # written, but no Mosquitto started
    # The reload "succeeds" (as a reload command for a broker that is down can), so the
    # revocation goes on to look for its proof at the broker's address.
    settings.MOSQUITTO_PID_FILE, settings.BROKER_RELOAD_COMMAND = "", "true"

    response = APIClient().get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {
        "status": "fail",
        "message": f"could not connect to the broker at 127.0.0.1:{port} (Connection refused)",
    }

    device = operator_api.post("/register", {"name": "lost", "key_type": "ec-p256"}, format="json").json()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        revoked = operator_api.post(f"/revoke/{device['id']}", {"reason": "keyCompromise"}, format="json")
    took = time.monotonic() - started
    assert revoked.status_code == 200
    assert revoked.json()["revocation_enforced_at"] is None
    # Nothing listens: no waiting out the 5 s proof deadline.
    assert took < 2.0, took
    assert f"Could not connect to the broker at 127.0.0.1:{port} to prove the revocation" in caplog.text
    assert "still accepts a revoked canary" not in caplog.text


def test_the_broker_defaults_to_127_0_0_1_8883_before_any_configuration(no_address_settings: Path) -> None:
    assert str(public_address()) == "127.0.0.1:8883"


def test_the_broker_is_reloaded_through_the_pid_file_the_configuration_names(
    no_address_settings: Path, settings: Any
) -> None:
    """Without MOSQUITTO_PID_FILE, `mosquitto_config` still writes a pid_file (beside the
    configuration) and records it, so the portal can make that broker reload: the README's
    walk-through sets nothing but the port."""
    settings.MOSQUITTO_PID_FILE = ""
    port = free_port()
    output = write_config(no_address_settings, port)
    expected = no_address_settings.resolve() / "mosquitto.pid"
    assert f"pid_file {expected}" in (no_address_settings / "mosquitto.conf").read_text()
    assert pid_file() == str(expected)
    assert f"reload through {expected}" in output
    broker = start_mosquitto(no_address_settings, port)
    try:
        deadline = time.monotonic() + 5
        while not expected.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reload_broker() is True  # SIGHUP to the pid Mosquitto wrote
        assert broker.process.poll() is None
    finally:
        stop_mosquitto(broker)
    # MOSQUITTO_PID_FILE still chooses the place.
    settings.MOSQUITTO_PID_FILE = str(no_address_settings / "elsewhere.pid")
    assert pid_file() == settings.MOSQUITTO_PID_FILE


def test_a_broker_reloaded_by_command_gets_no_pid_file(no_address_settings: Path, settings: Any) -> None:
    """A broker reloaded through BROKER_RELOAD_COMMAND (the compose stack's, in its own container
    with a read-only configuration volume) gets no pid_file: Mosquitto refuses to start when it
    cannot write one."""
    settings.MOSQUITTO_PID_FILE = ""
    settings.BROKER_RELOAD_COMMAND = "true"
    port = free_port()
    write_config(no_address_settings, port)
    assert "pid_file" not in (no_address_settings / "mosquitto.conf").read_text()
    assert pid_file() == ""
    broker = start_mosquitto(no_address_settings, port)  # starts: nothing to write
    stop_mosquitto(broker)


def test_the_catch_up_issues_no_canary_while_nothing_answers_at_the_broker(
    no_address_settings: Path, settings: Any
) -> None:
    """A broker that is down leaves changes pending, so every minute's catch-up finds the broker
    behind; it syncs what it can but revokes no canary and signs no CRL for a proof nobody can
    give (it added a revoked certificate and a CRL every minute)."""
    from broker.dispatch import catch_up_broker
    from broker.sync import queue_changes
    from pki.models import Certificate, CertificatePurpose, CertificateRevocationList

    settings.BROKER_RELOAD_COMMAND = "true"
    write_config(no_address_settings, free_port())  # nothing will listen there
    queue_changes(["00000000-0000-0000-0000-000000000001"])
    monitors = Certificate.objects.filter(purpose=CertificatePurpose.MONITOR).count()
    crls = CertificateRevocationList.objects.count()
    for _ in range(3):
        catch_up_broker()
    assert Certificate.objects.filter(purpose=CertificatePurpose.MONITOR).count() == monitors
    assert CertificateRevocationList.objects.count() == crls


def test_a_broker_that_does_not_handle_sighup_yet_is_not_signalled(tmp_path: Path, settings: Any) -> None:
    """Mosquitto opens its port before it installs its signal handlers, and SIGHUP in between
    stops it. A process that does not handle SIGHUP (as a starting broker) is left alone and the
    sync told why; one that handles it is signalled."""
    settings.BROKER_RELOAD_COMMAND = ""
    settings.BROKER_TIMEOUT_SECONDS = 0.5
    settings.MOSQUITTO_PID_FILE = str(tmp_path / "mosquitto.pid")
    starting = subprocess.Popen(["sleep", "60"])
    handling = subprocess.Popen(
        [sys.executable, "-c", HANDLES_SIGHUP, str(tmp_path / "reloaded")], stdout=subprocess.PIPE
    )
    try:
        assert handling.stdout is not None and handling.stdout.readline() == b"ready\n"
        Path(settings.MOSQUITTO_PID_FILE).write_text(f"{starting.pid}\n")
        assert catches_sighup(starting.pid) is False
        with pytest.raises(BrokerSyncError, match="does not handle SIGHUP yet"):
            reload_broker()
        assert starting.poll() is None  # not stopped
        Path(settings.MOSQUITTO_PID_FILE).write_text(f"{handling.pid}\n")
        assert catches_sighup(handling.pid) is True
        assert reload_broker() is True
        assert handling.wait(timeout=10) == 0
        assert (tmp_path / "reloaded").exists()
    finally:
        for process in (starting, handling):
            process.kill()
            process.wait()


HANDLES_SIGHUP = """
import pathlib, signal, sys, time
def reloaded(number, frame):
    pathlib.Path(sys.argv[1]).touch()
    sys.exit(0)
signal.signal(signal.SIGHUP, reloaded)
print("ready", flush=True)
time.sleep(60)
"""
