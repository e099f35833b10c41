"""Issue #21 item 3: the revoke confirmation says what each backend does to a live session, and
that is what a real Mosquitto does to a real MQTT v5 client.

mosquitto_acl: the session stays connected but loses its topics (PUBACK 135, nothing delivered).
mosquitto_dynsec: the session is ended. Both: the certificate is refused on reconnection.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from django.test import Client
from rest_framework.test import APIClient

from broker.acl_rules import add_acl_rule
from broker.sync import revocation_effect
from devices.models import Device
from tests.support.mosquitto import ACCEPTED, NOT_AUTHORIZED, Broker, DeviceClient, new_device
from tests.support.portal import signed_in

ENDED_WITHIN = 1.0  # seconds after the revoke returns (as test_broker's enforcement deadline)
ACL_EFFECT = (
    "A live MQTT session of the device stays connected but loses its topics: its publishes are refused "
    "(MQTT 5 PUBACK reason 135, not authorized) and messages on its topics no longer reach it."
)
DYNSEC_EFFECT = "A live MQTT session of the device is ended at once (its broker client is deleted)."


def test_the_revoke_page_says_what_the_broker_does_to_the_live_session(
    mosquitto: Broker,
    operator_api: APIClient,
    make_user: Any,
    verified_login: Any,
    tmp_path: Path,
    settings: Any,
) -> None:
    stolen = new_device(operator_api, tmp_path, "stolen")
    neighbour = new_device(operator_api, tmp_path, "neighbour")
    commands = f"devices/{stolen.device_id}/commands"
    # Someone else may write to the device's command topic: what reaches the device after it is revoked?
    add_acl_rule(neighbour.device_id, commands, "write", shared=True)
    live = DeviceClient(mosquitto, stolen)
    assert live.connect(), mosquitto.log()
    live.subscribe(f"devices/{stolen.device_id}/#")
    sender = DeviceClient(mosquitto, neighbour)
    assert sender.connect(), mosquitto.log()
    assert sender.publish(commands, b"before") in ACCEPTED
    assert live.next_message(timeout=5) == (commands, b"before")

    operator: Client = signed_in(make_user, verified_login, "Operators", "olga")
    page = html.unescape(operator.get(f"/portal/devices/{stolen.device_id}/revoke/").content.decode())
    effect = ACL_EFFECT if settings.BROKER_BACKEND == "mosquitto_acl" else DYNSEC_EFFECT
    assert effect in page
    assert "It cannot connect again: the broker refuses its certificate." in page
    assert revocation_effect() in page
    assert "cuts its live session" not in page

    done = operator.post(
        f"/portal/devices/{stolen.device_id}/revoke/", {"reason": "keyCompromise", "confirm": "on"}
    )
    returned = time.monotonic()
    assert done.status_code == 302
    assert Device.objects.get(pk=stolen.device_id).revocation_enforced_at is not None

    if settings.BROKER_BACKEND == "mosquitto_acl":
        # Stays connected: the broker still answers it, and has not closed it.
        assert live.publish(f"devices/{stolen.device_id}/telemetry") == NOT_AUTHORIZED == 135
        assert not live.disconnected.is_set()
        # Messages on its topics no longer reach it (the sender's own right still holds).
        assert sender.publish(commands, b"after") in ACCEPTED
        assert live.next_message(timeout=1.0) is None
        assert not live.disconnected.is_set()
    else:
        assert live.disconnected.wait(max(0.0, ENDED_WITHIN - (time.monotonic() - returned))), mosquitto.log()
    live.close()
    sender.close()

    # Both: it cannot connect again.
    assert not DeviceClient(mosquitto, stolen).connect()


def test_the_revoke_page_shows_even_with_an_unknown_backend(
    operator_api: APIClient, make_user: Any, verified_login: Any, settings: Any
) -> None:
    device = operator_api.post("/register", {"name": "odd", "key_type": "ec-p256"}, format="json").json()
    settings.BROKER_BACKEND = "mosquitto_cluster"
    operator: Client = signed_in(make_user, verified_login, "Operators", "olga")
    page = operator.get(f"/portal/devices/{device['id']}/revoke/")
    assert page.status_code == 200
    text = html.unescape(page.content.decode())
    assert (
        "What the broker does with it cannot be said: BROKER_BACKEND 'mosquitto_cluster' is not one of"
        in text
    )
