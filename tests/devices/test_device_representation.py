"""GET /device/<id> reads a device in one query and renders it with serializers built once:
the answer must be exactly what the generic DRF path gives, for every state a device can be in."""

from __future__ import annotations

import threading
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from devices.api.serializers import DeviceSerializer, device_representation
from devices.lifecycle import get_device, reissue_device, revoke_device
from devices.models import Device, DeviceStatus
from pki.profiles import RevocationReason
from tests.support.api import post_register


def devices_in_every_state(client: APIClient) -> list[Device]:
    active = post_register(client, name="active", metadata={"site": "Ø-1", "floor": [1, 2]}).json()["id"]
    revoked = post_register(client, name="revoked", hardware_id="HW-revoked").json()["id"]
    revoke_device(get_device(revoked), RevocationReason.KEY_COMPROMISE)
    reissued = post_register(client, name="reissued").json()["id"]
    reissue_device(get_device(reissued))
    anonymous = post_register(client, name="made by a script").json()["id"]
    Device.objects.filter(pk=anonymous).update(created_by=None)
    pending = Device.objects.create(name="pending", status=DeviceStatus.PENDING)
    failed = Device.objects.create(name="failed", status=DeviceStatus.FAILED, failure_reason="no CA")
    return [get_device(key) for key in (active, revoked, reissued, anonymous, pending.pk, failed.pk)]


def test_same_answer_as_the_generic_serializer(operator_api: APIClient) -> None:
    for device in devices_in_every_state(operator_api):
        generic = DeviceSerializer(Device.objects.with_certificates().get(pk=device.pk)).data
        assert device_representation(device) == generic
        assert operator_api.get(f"/device/{device.pk}").json() == generic
    revoked = Device.objects.get(name="revoked")
    shown = operator_api.get(f"/device/{revoked.pk}").json()
    assert shown["certificate"]["revocation_reason"] == "keyCompromise"
    reissued = Device.objects.with_certificates().get(name="reissued")
    newest = max(
        reissued.certificates.all(), key=lambda certificate: (certificate.created_at, certificate.pk)
    )
    assert operator_api.get(f"/device/{reissued.pk}").json()["certificate"]["serial"] == newest.serial


def test_one_query_reads_a_device_and_its_newest_certificate(operator_api: APIClient) -> None:
    device_id = post_register(operator_api).json()["id"]
    with CaptureQueriesContext(connection) as queries:
        device = get_device(device_id)
        device_representation(device)
    assert len(queries.captured_queries) == 1


def test_threads_share_the_built_serializers(operator_api: APIClient) -> None:
    devices = devices_in_every_state(operator_api)
    expected = [device_representation(device) for device in devices]
    seen: list[list[dict[str, Any]]] = []
    failures: list[BaseException] = []

    def render() -> None:
        try:
            for _ in range(50):
                seen.append([device_representation(device) for device in devices])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=render) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(seen) == 200
    assert all(rendered == expected for rendered in seen)
