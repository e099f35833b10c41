"""Issue #16 item 7: a device cannot knock another off the broker by borrowing its client id.

A real Mosquitto with the configuration `mosquitto_config` writes, for both backends, and real
paho clients over mTLS: device A presents its own certificate with device B's client id.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rest_framework.test import APIClient

from broker.probe import probe_broker
from broker.services import sync_broker
from tests.mosquitto import (
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
