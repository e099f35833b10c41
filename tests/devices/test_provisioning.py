"""Provisioning on workers: 202 and pending, then active; idempotent tasks; sealed payloads;
a worker killed mid-task; a stopped Redis; failures an operator can retry; debounced syncs.

Everything here talks to a real Redis; the worker tests start real Celery worker processes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from celery.exceptions import Retry
from django.db import OperationalError
from django.test.utils import override_settings
from rest_framework.test import APIClient

from broker import dispatch
from broker.dispatch import SYNC_PENDING_KEY, request_broker_sync, sync_broker_debounced, tell_broker
from broker.models import BrokerSync, PendingChange
from devices import registration
from devices.models import Device, DownloadLink
from devices.provisioning import provision_device
from devices.registration import SEAL_PURPOSE
from devices.tasks import PROVISION_ATTEMPTS, provision_device_task
from kernel.sealing import SealBroken, unseal
from pki.keystore import CertificateAuthority, forget_loaded_ca
from pki.models import Certificate
from tests.support.helpers import free_port, open_bundle
from tests.support.workers import REDIS_URL, celery_worker, worker_environment

# Workers see only committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator_api(superuser_api: APIClient) -> APIClient:
    """A superuser's client: the transactional tests here flush the role groups of Operators."""
    return superuser_api


@pytest.fixture
def queue(use_queue: Callable[[str], None]) -> redis.Redis:
    """The test Redis database, empty, as the task queue."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.RedisError as exc:  # .ci/run starts Redis; a developer machine must have it too
        pytest.fail(f"Redis is needed at {REDIS_URL} ({exc}); `.ci/run` starts one.")
    use_queue(REDIS_URL)
    return client


def queued_messages(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange("celery", 0, -1)]


def task_arguments(message: dict[str, Any]) -> list[Any]:
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return list(args)


def provisioning_messages(client: redis.Redis) -> list[list[Any]]:
    return [
        task_arguments(message)
        for message in queued_messages(client)
        if message["headers"]["task"] == "onboarding.provision_device"
    ]


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def device_status(client: APIClient, device_id: str) -> str:
    status: str = client.get(f"/device/{device_id}").json()["status"]
    return status


def test_register_answers_202_pending_and_the_link_waits_for_the_worker(
    operator_api: APIClient, queue: redis.Redis
) -> None:
    response = operator_api.post("/register", {"name": "later", "hardware_id": "HW-202"}, format="json")

    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["status"] == "pending"
    assert answer["certificate_pem"] is None
    assert answer["bundle_password"] and answer["download_url"]
    assert response["Location"] == f"/api/v1/devices/{answer['id']}"
    assert Certificate.objects.filter(device_id=answer["id"]).count() == 0
    # The link answers "not ready" without being used up.
    early = operator_api.get(urlsplit(answer["download_url"]).path)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "bundle_not_ready"

    [arguments] = provisioning_messages(queue)
    assert provision_device(*arguments) == "active"

    assert device_status(operator_api, answer["id"]) == "active"
    files = open_bundle(operator_api, answer)  # the password given with the 202 opens the bundle
    assert b"BEGIN CERTIFICATE" in files["device.crt"]
    assert b"PRIVATE KEY" in files["device.key"]


def test_task_messages_hold_ids_and_a_sealed_password_only(
    operator_api: APIClient, queue: redis.Redis
) -> None:
    answer = operator_api.post("/register", {"name": "sealed"}, format="json").json()
    token = urlsplit(answer["download_url"]).path.rsplit("/", 1)[1]

    [message] = queued_messages(queue)
    raw = json.dumps(message) + base64.b64decode(message["body"]).decode()
    for secret in (answer["bundle_password"], answer["bundle_password"].replace("-", ""), token):
        assert secret not in raw
    assert "PRIVATE KEY" not in raw
    device_id, link_id, sealed = task_arguments(message)
    assert device_id == answer["id"]
    assert link_id == DownloadLink.objects.get(device_id=device_id).pk
    # The sealed value is the password, readable with SECRET_KEY and bound to this link.
    assert unseal(SEAL_PURPOSE, str(link_id), sealed)["password"] == answer["bundle_password"]
    with pytest.raises(SealBroken):
        unseal(SEAL_PURPOSE, str(link_id + 1), sealed)


def test_a_duplicated_message_signs_once(operator_api: APIClient, queue: redis.Redis) -> None:
    operator_api.post("/register", {"name": "twice", "key_type": "ec-p256"}, format="json")
    [arguments] = provisioning_messages(queue)

    assert provision_device(*arguments) == "active"
    assert provision_device(*arguments) == "active"
    assert Certificate.objects.filter(device_id=arguments[0]).count() == 1


def test_a_permanent_failure_marks_the_device_failed_and_retry_provisions_it(
    operator_api: APIClient, queue: redis.Redis, settings: Any, tmp_path: Path
) -> None:
    other = operator_api.post("/register", {"name": "fine", "key_type": "ec-p256"}, format="json").json()
    queue.delete("celery")
    first = operator_api.post("/register", {"name": "unlucky", "key_type": "ec-p256"}, format="json").json()
    [arguments] = provisioning_messages(queue)
    queue.delete("celery")
    ca_root = settings.CA_ROOT_PATH
    settings.CA_ROOT_PATH = tmp_path / "no-ca-here"
    forget_loaded_ca()

    assert provision_device(*arguments) == "failed"

    device = Device.objects.get(pk=first["id"])
    assert device.status == "failed"
    assert "init_ca" in device.failure_reason  # a reason an operator can act on
    refused = operator_api.get(urlsplit(first["download_url"]).path)
    assert refused.status_code == 410
    assert Certificate.objects.filter(device_id=first["id"]).count() == 0
    # Retrying a device that is not failed is refused.
    assert (
        operator_api.post(f"/api/v1/devices/{other['id']}/retry").json()["error"]["code"] == "invalid_state"
    )

    settings.CA_ROOT_PATH = ca_root
    forget_loaded_ca()
    retried = operator_api.post(f"/api/v1/devices/{first['id']}/retry")
    assert retried.status_code == 202
    second = retried.json()
    assert second["status"] == "pending" and second["failure_reason"] == ""
    assert second["bundle_password"] != first["bundle_password"]
    [arguments] = provisioning_messages(queue)
    assert provision_device(*arguments) == "active"
    assert open_bundle(operator_api, second)["device.json"]
    assert operator_api.get(urlsplit(first["download_url"]).path).status_code == 410


def test_transient_failures_are_retried_then_the_device_is_failed(
    operator_api: APIClient, queue: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = operator_api.post("/register", {"name": "flaky", "key_type": "ec-p256"}, format="json").json()
    [arguments] = provisioning_messages(queue)
    attempts = []

    def database_gone(*args: Any, **kwargs: Any) -> None:
        attempts.append(1)
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(registration, "sign_certificate", database_gone)
    queue.delete("celery")

    def attempt(retries: int) -> str:
        # As a worker runs a (retried) message: the task body with its request.
        provision_device_task.push_request(
            id=f"attempt-{retries}", retries=retries, args=arguments, kwargs={}, called_directly=False
        )
        try:
            return str(provision_device_task.run(*arguments))
        finally:
            provision_device_task.pop_request()

    for retries in range(PROVISION_ATTEMPTS - 1):
        with pytest.raises(Retry):
            attempt(retries)
        assert Device.objects.get(pk=answer["id"]).status == "pending"
    # Each retry went back to the queue, later each time (backoff).
    again = [
        m["headers"] for m in queued_messages(queue) if m["headers"]["task"] == "onboarding.provision_device"
    ]
    assert sorted(headers["retries"] for headers in again) == [1, 2, 3, 4, 5]
    assert all(headers["eta"] for headers in again)

    assert attempt(PROVISION_ATTEMPTS - 1) == "failed"
    assert len(attempts) == PROVISION_ATTEMPTS
    device = Device.objects.get(pk=answer["id"])
    assert device.status == "failed"
    assert "could not connect" in device.failure_reason


def test_with_redis_stopped_register_is_503_and_leaves_nothing(
    operator_api: APIClient, use_queue: Callable[[str], None], session_ca_root: Path
) -> None:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _answers(url), timeout=10, what="the test's own Redis")
    use_queue(url)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)
    files_before = sorted(path.name for path in session_ca_root.rglob("*"))

    started = time.monotonic()
    response = operator_api.post("/register", {"name": "nowhere", "hardware_id": "HW-503"}, format="json")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "task_queue_unavailable"
    assert "task queue" in response.json()["error"]["message"]
    assert time.monotonic() - started < 10
    assert not Device.objects.exists()
    assert not DownloadLink.objects.exists()
    assert sorted(path.name for path in session_ca_root.rglob("*")) == files_before
    health = APIClient().get("/health")
    assert health.status_code == 503
    assert "task_queue" in health.json()["failed"]


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def test_a_real_worker_takes_a_registration_from_pending_to_active(
    operator_api: APIClient, queue: redis.Redis, ca: CertificateAuthority
) -> None:
    with celery_worker():
        response = operator_api.post("/register", {"name": "worked", "key_type": "rsa2048"}, format="json")
        assert response.status_code == 202
        answer = response.json()
        wait_for(lambda: device_status(operator_api, answer["id"]) == "active", what="the device active")

    files = open_bundle(operator_api, answer)
    assert Certificate.objects.filter(device_id=answer["id"]).count() == 1
    assert files["device.crt"] == Certificate.objects.get(device_id=answer["id"]).pem.encode()


# A killed worker's message comes back after the visibility timeout, at the next sweep: both a
# few seconds here instead of minutes.
FAST_REDELIVERY = {"CELERY_VISIBILITY_TIMEOUT": "2", "CELERY_UNACKED_SWEEP_SECONDS": "1"}


def test_a_worker_killed_mid_task_ends_with_one_certificate(
    operator_api: APIClient, queue: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "signing"
    environment = worker_environment(
        SLOW_WORKER_MARKER=str(marker), CELERY_VISIBILITY_TIMEOUT="2", CELERY_UNACKED_SWEEP_SECONDS="1"
    )
    with celery_worker(environment, module="tests.support.slow_worker", name="doomed") as doomed:
        answer = operator_api.post(
            "/register", {"name": "survivor", "key_type": "ec-p256"}, format="json"
        ).json()
        wait_for(marker.exists, what="the worker to start signing")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
    assert Device.objects.get(pk=answer["id"]).status == "pending"
    assert Certificate.objects.filter(device_id=answer["id"]).count() == 0

    with celery_worker(
        worker_environment(CELERY_VISIBILITY_TIMEOUT="2", CELERY_UNACKED_SWEEP_SECONDS="1"), name="rescuer"
    ):
        wait_for(lambda: device_status(operator_api, answer["id"]) == "active", timeout=90, what="redelivery")

    assert Certificate.objects.filter(device_id=answer["id"]).count() == 1
    device = Device.objects.get(pk=answer["id"])
    assert device.current_certificate is not None
    assert device.current_certificate.status == "active"
    assert open_bundle(operator_api, answer)["device.key"]


def test_a_burst_of_changes_gives_a_handful_of_broker_syncs_and_the_last_state_wins(
    operator_api: APIClient, queue: redis.Redis, settings: Any
) -> None:
    with override_settings(CELERY_TASK_ALWAYS_EAGER=True):  # made in this process, at once
        devices = [
            operator_api.post("/register", {"name": f"b{n}", "key_type": "ec-p256"}, format="json").json()[
                "id"
            ]
            for n in range(20)
        ]
    with celery_worker():
        warm_up = BrokerSync.objects.count()
        assert request_broker_sync()
        wait_for(lambda: BrokerSync.objects.count() > warm_up, what="the worker's first sync")
        syncs_before = BrokerSync.objects.count()
        started = time.monotonic()
        for device_id in devices:  # each revocation asks for a sync
            assert operator_api.post(f"/revoke/{device_id}").status_code == 200
        for _ in range(1000):  # and a thousand more requests in well under a second
            request_broker_sync()
        burst = time.monotonic() - started

        def acl_lists_all_revoked() -> bool:
            acl = Path(settings.BROKER_ACL_FILE)
            return acl.exists() and all(device_id in acl.read_text() for device_id in devices)

        wait_for(acl_lists_all_revoked, what="the ACL to deny every revoked device")
        wait_for(lambda: not queue.exists(SYNC_PENDING_KEY), what="the last sync")
        time.sleep(1)  # a sync queued at the very end would show up now

    syncs = BrokerSync.objects.count() - syncs_before
    print(f"{len(devices)} revocations + 1000 sync requests in {burst:.2f} s gave {syncs} broker syncs")
    # One sync per debounce window at most, not one per change (1020 requests).
    windows = burst / settings.BROKER_SYNC_DEBOUNCE_SECONDS + 2
    assert 1 <= syncs <= windows, (syncs, burst)
    assert syncs < 40


def test_the_portal_shows_a_registration_pending_then_active_behind_a_real_worker(
    queue: redis.Redis, ca: CertificateAuthority, verified_login: Any
) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    from devices.models import DeviceStatus
    from portal.views.devices import PENDING_NOTE
    from tests.support.portal import hidden, hidden_text

    operator = verified_login(
        Client(), User.objects.create_superuser("portal-operator", password="a-long-test-password")
    )
    form = operator.get("/portal/devices/register/").content.decode()
    fields = {"name": "via-portal", "hardware_id": "", "key_type": "ec-p256", "metadata": "", "csr": ""}
    answer = operator.post("/portal/devices/register/", {**fields, "submission": hidden(form, "submission")})

    # No worker yet: the operator has the password and link at once, and sees the device wait.
    assert answer.status_code == 303
    shown = operator.get(answer["Location"]).content.decode()
    assert PENDING_NOTE.split(":")[0] in shown
    password, url = hidden_text(shown, "bundle-password"), hidden_text(shown, "download-url")
    device = Device.objects.get(name="via-portal")
    assert device.status == DeviceStatus.PENDING
    assert "Being provisioned" in operator.get(f"/portal/devices/{device.id}/").content.decode()
    assert Client().get(urlsplit(url).path).status_code == 409  # not ready, and not used up

    with celery_worker():
        wait_for(lambda: Device.objects.get(pk=device.pk).status == DeviceStatus.ACTIVE, what="active")

    detail = operator.get(f"/portal/devices/{device.id}/").content.decode()
    certificate = Certificate.objects.get(device=device)
    assert "Being provisioned" not in detail
    assert certificate.serial in detail.replace("<wbr>", "")  # ids may break at <wbr>
    files = open_bundle(Client(), {"download_url": url, "bundle_password": password})
    assert files["device.crt"] == certificate.pem.encode()


def test_a_failed_broker_sync_keeps_its_changes_pending_and_asks_again(
    queue: redis.Redis, ca: CertificateAuthority, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.errors import BrokerSyncError

    settings.BROKER_SYNC_RETRY_SECONDS = 30
    first, second = "1c1c1c1c-1111-4c35-9d7e-0b0c0d0e0f10", "2c2c2c2c-2222-4c35-9d7e-0b0c0d0e0f10"
    tell_broker([first])
    tell_broker([second])
    # One sync queued for the burst; both changes recorded until a sync succeeds.
    messages = queued_messages(queue)
    assert len(messages) == 1 and messages[0]["headers"]["kwargsrepr"] == "{'prove': True, 'changes': True}"
    assert sorted(PendingChange.objects.values_list("device_id", flat=True)) == [first, second]
    queue.delete("celery")

    def unreachable(*, reload: bool = True, devices: Any = None) -> None:
        raise BrokerSyncError("the broker's dynamic-security plugin did not answer")

    monkeypatch.setattr(dispatch, "sync_broker", unreachable)
    with pytest.raises(BrokerSyncError):
        sync_broker_debounced(prove=False, changes=True)
    # Still pending, and a new sync is queued for later, not at once.
    assert sorted(PendingChange.objects.values_list("device_id", flat=True)) == [first, second]
    (retry,) = queued_messages(queue)
    eta = dt.datetime.fromisoformat(retry["headers"]["eta"])
    assert eta - dt.datetime.now(dt.UTC) > dt.timedelta(seconds=20)
    assert queue.exists(SYNC_PENDING_KEY)  # changes meanwhile ride along with it

    monkeypatch.undo()
    from pki.crl import publish_crl

    publish_crl()
    sync_broker_debounced(prove=False, changes=True)  # the ACL backend: a full render
    assert not PendingChange.objects.exists()


def test_workers_bring_a_dynsec_broker_in_step_device_by_device(
    operator_api: APIClient, queue: redis.Redis, settings: Any, tmp_path: Path
) -> None:
    """Registrations and a revocation with workers: each debounced sync sends commands for the
    devices changed since the last one, and the broker ends in step with the database."""
    from broker.sync import broker_drift
    from tests.support.mosquitto import (
        ACCEPTED,
        DeviceClient,
        configured_broker,
        credentials_from_answer,
        stop_mosquitto,
    )

    broker = configured_broker(settings, tmp_path, "mosquitto_dynsec")
    environment = worker_environment(
        BROKER_BACKEND="mosquitto_dynsec",
        MOSQUITTO_PID_FILE=settings.MOSQUITTO_PID_FILE,
        BROKER_PROBE_HOST="127.0.0.1",
        BROKER_PROBE_PORT=str(broker.port),
    )
    syncs_before = BrokerSync.objects.count()
    try:
        with celery_worker(environment):
            answers = []
            for number in range(3):
                response = operator_api.post(
                    "/register", {"name": f"w{number}", "key_type": "ec-p256"}, format="json"
                )
                assert response.status_code == 202
                answers.append(response.json())
            wait_for(
                lambda: all(device_status(operator_api, answer["id"]) == "active" for answer in answers),
                what="the devices active",
            )
            credentials = [
                credentials_from_answer(operator_api, answer, tmp_path / answer["id"]) for answer in answers
            ]

            def publishes(device: Any) -> bool:
                client = DeviceClient(broker, device)
                try:
                    return client.connect() and client.publish(f"devices/{device.device_id}/t") in ACCEPTED
                finally:
                    client.close()

            wait_for(
                lambda: all(publishes(device) for device in credentials),
                what="the worker to give each device its client",
            )

            doomed = DeviceClient(broker, credentials[0])
            assert doomed.connect()
            assert operator_api.post(f"/revoke/{answers[0]['id']}").status_code == 200
            wait_for(doomed.disconnected.is_set, what="the revoked device's session to end")
            doomed.close()
            wait_for(
                lambda: not queue.exists(SYNC_PENDING_KEY) and not broker_drift(),
                what="the broker in step with the database",
            )
        assert not DeviceClient(broker, credentials[0]).connect()
        assert publishes(credentials[1]) and publishes(credentials[2])
    finally:
        stop_mosquitto(broker)
    syncs = BrokerSync.objects.order_by("pk")[syncs_before:]
    assert syncs and all(sync.changed_devices is not None for sync in syncs)  # changes, not full syncs
    assert sum(sync.changed_devices or 0 for sync in syncs) >= 4  # three registrations, one revocation
    assert not PendingChange.objects.exists()
