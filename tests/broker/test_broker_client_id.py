"""Issue #16 item 7: a device cannot knock another off the broker by borrowing its client id.

A real Mosquitto with the configuration `mosquitto_config` writes, for both backends, and real
paho clients over mTLS: device A presents its own certificate with device B's client id.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from broker.backends.dynsec import MosquittoDynsecBackend
from broker.probe import probe_broker
from broker.state import desired_state
from broker.sync import sync_broker
from tests.support.mosquitto import (
    ACCEPTED,
    NOT_AUTHORIZED,
    Broker,
    Credentials,
    DeviceClient,
    new_device,
)


def test_a_device_using_another_devices_client_id_does_not_end_its_session(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path, settings: Any
) -> None:
    alice = new_device(operator_api, tmp_path, "alice")
    bob = new_device(operator_api, tmp_path, "bob")
    victim = DeviceClient(mosquitto, bob)
    assert victim.connect(), mosquitto.log()

    # Alice's own certificate and key, but Bob's client id.
    impostor = DeviceClient(mosquitto, Credentials(device_id=bob.device_id, directory=alice.directory))
    assert impostor.connect(), mosquitto.log()
    time.sleep(1.0)  # a takeover closes the old session at once; give it time to show

    assert not victim.disconnected.is_set(), mosquitto.log()
    assert victim.publish(f"devices/{bob.device_id}/telemetry") in ACCEPTED
    # The impostor's session is Alice's (the broker named it after her certificate): her own
    # topics are hers, Bob's are not.
    assert impostor.publish(f"devices/{alice.device_id}/telemetry") in ACCEPTED
    assert impostor.publish(f"devices/{bob.device_id}/telemetry") == NOT_AUTHORIZED
    assert f"as {alice.device_id}" in mosquitto.log()
    impostor.close()
    victim.close()

    # The portal's own connections keep working with client ids bound to certificates: the
    # probe (monitor in, canary refused) and, with dynamic security, the administrator's session.
    assert probe_broker().healthy
    sync_broker()
    if settings.BROKER_BACKEND == "mosquitto_dynsec":
        carol = new_device(operator_api, tmp_path, "carol")  # created through $CONTROL
        client = DeviceClient(mosquitto, carol)
        assert client.connect(), mosquitto.log()
        assert client.publish(f"devices/{carol.device_id}/telemetry") in ACCEPTED
        client.close()


def test_the_generated_configuration_binds_the_client_id_to_the_certificate(mosquitto: Broker) -> None:
    conf = (mosquitto.directory / "mosquitto.conf").read_text().splitlines()
    assert "use_identity_as_username true" in conf
    assert "use_username_as_clientid true" in conf


@pytest.mark.parametrize("mosquitto", ["mosquitto_dynsec"], indirect=True)
def test_two_administrator_sessions_at_once_do_not_end_each_other(mosquitto: Broker, settings: Any) -> None:
    """With client ids bound to certificates, every session of the portal's administrator has the
    same client id, so a second one (a health check during a sync) would end the first. Syncs take
    turns; a health check finds the session busy and does not open one."""
    # The other thread's database connection does not see this test's (uncommitted) listener row.
    settings.BROKER_PROBE_HOST, settings.BROKER_PROBE_PORT = mosquitto.host, mosquitto.port
    backend = MosquittoDynsecBackend()
    first_answer: list[Any] = []
    failures: list[BaseException] = []
    opened = threading.Event()

    def first() -> None:
        try:
            with backend._session() as session:
                opened.set()
                time.sleep(1.5)  # the second session is asked for meanwhile
                first_answer.extend(session.run([{"command": "listClients"}], timeout=5))
        except BaseException as exc:  # noqa: BLE001 - reported to the test's thread
            failures.append(exc)
        finally:
            opened.set()

    thread = threading.Thread(target=first)
    thread.start()
    assert opened.wait(10)
    # /health's drift check neither waits for the session in use nor opens a second one: it
    # answers at once (an anonymous caller must not hold up a revocation's push, nor wait 30 s).
    started = time.monotonic()
    assert backend.drift(desired_state(with_active=True)) == []
    assert time.monotonic() - started < 1.0
    assert thread.is_alive()  # the first session was still at work
    # A second sync's session waits its turn, then works: neither ends the other.
    with backend._session() as second:
        second_answer = second.run([{"command": "listClients"}], timeout=5)
    assert first_answer  # it waited its turn: the first session had finished its work
    assert second_answer and not second_answer[0].get("error")
    thread.join(20)
    assert not failures, failures
    assert first_answer and not first_answer[0].get("error")
    assert "already connected, closing old connection" not in mosquitto.log()
