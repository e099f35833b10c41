"""Revocation is the emergency path (issue #16, items 4-6): cleanup never blocks it, file effects
follow the commit, and the broker catches up by itself after a crash.

Real parts throughout: the kernel refuses the writes (a read-only bind mount, a full tmpfs;
the tests run as root, where chmod stops nothing), a real gunicorn killed with SIGKILL, and a
real Mosquitto configured by `mosquitto_config` that real paho clients connect to.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import time_machine
from cryptography import x509
from django.utils import timezone
from rest_framework.test import APIClient

from broker import tasks as broker_tasks
from broker.sync import broker_lag
from devices import delivery, tasks
from devices.models import Device, DownloadLink
from pki.authority import initialize_ca
from pki.keystore import CertificateAuthority, forget_loaded_ca
from pki.models import Certificate
from pki.profiles import KeyType
from tests.support.api import link_path, register
from tests.support.helpers import free_port, subprocess_database_url
from tests.support.mosquitto import (
    Broker,
    Credentials,
    DeviceClient,
    configured_broker,
    credentials_from_answer,
    stop_mosquitto,
)
from tests.support.workers import (
    REDIS_URL,
    celery_worker,
    gunicorn_server,
    live_broker_environment,
    worker_environment,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(transactional_db: None) -> str:
    """A superuser's API token: transactional tests flush the role groups the migrations made."""
    from django.contrib.auth.models import User

    from accounts.services import create_api_token

    user = User.objects.create_superuser("fleet-script", password="a-long-test-password")
    return str(create_api_token(user).value)


def api(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def operator_api(ca: CertificateAuthority, token: str) -> APIClient:
    return api(token)


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """The kernel refuses every write under `directory`, root's included: a read-only bind
    mount of the directory onto itself."""
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True)
        with pytest.raises(OSError):
            (directory / ".still-writable").touch()
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@contextmanager
def tiny_disk(directory: Path, size: str = "1m") -> Iterator[Path]:
    """A small tmpfs mounted on `directory`, to be filled to the last byte."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def fill(disk: Path) -> None:
    """Write until the disk is full (ENOSPC)."""
    descriptor = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, b"\0" * 512)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(descriptor)


# --- 4. A read-only bundle directory does not block a revocation -----------------------------


def test_a_read_only_bundle_directory_does_not_block_revocation(operator_api: APIClient) -> None:
    answer = register(operator_api, "read-only")
    bundle = delivery.bundle_path(answer["id"])
    assert bundle.exists()

    with read_only(bundle.parent):
        started = time.monotonic()
        response = operator_api.post(f"/revoke/{answer['id']}", {"reason": "keyCompromise"}, format="json")
        took = time.monotonic() - started

        assert response.status_code == 200, response.content
        assert response.json()["status"] == "revoked"
        assert Device.objects.get(pk=answer["id"]).status == "revoked"
        # The link is withdrawn in the database: the file still there hands out nothing.
        assert bundle.exists()
        download = APIClient().get(link_path(answer))
        assert download.status_code == 410 and download.json()["error"]["code"] == "device_revoked"
        # /health names what is left behind.
        health = APIClient().get("/health")
        assert health.status_code == 503
        assert "data_dir" in health.json()["failed"]
        assert "1 revoked device(s) still have a bundle" in health.json()["checks"]["data_dir"]["message"]
        # The scheduled cleanup cannot delete it yet, and says nothing went wrong for anyone else.
        assert tasks.cleanup_bundles_task() == 0
        assert bundle.exists()
    print(f"revocation with a read-only bundle directory answered in {took:.3f} s")

    # Writable again: the scheduled cleanup deletes it, and /health is green for the data directory.
    assert tasks.cleanup_bundles_task() == 1
    assert not bundle.exists()
    assert APIClient().get("/health").json()["checks"]["data_dir"] == {"status": "ok"}


def test_health_reports_a_data_directory_it_cannot_write(ca: CertificateAuthority, settings: Any,
                                                         tmp_path: Path) -> None:  # fmt: skip
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    assert APIClient().get("/health").json()["checks"]["data_dir"] == {"status": "ok"}
    with read_only(settings.DATA_DIR):
        response = APIClient().get("/health")
    assert response.status_code == 503
    assert "data_dir" in response.json()["failed"]
    assert response.json()["checks"]["data_dir"]["message"] == (
        "the data directory cannot be written (Read-only file system)"
    )


# --- 5. A rolled-back revocation keeps the device's bundle -----------------------------------


@pytest.fixture
def ca_on_tiny_disk(transactional_db: None, settings: Any, tmp_path: Path) -> Iterator[Path]:
    """A CA of its own on a 1 MiB tmpfs, its bundles (CA_ROOT_PATH/devices) on another file
    system: deleting a bundle frees nothing on the CA's disk, so a full disk stays full."""
    with tiny_disk(tmp_path / "disk") as disk:
        settings.CA_ROOT_PATH = disk / "certs"
        forget_loaded_ca()
        initialize_ca(common_name="Tiny Disk CA", key_type=KeyType.EC_P256)
        bundles, mount_point = tmp_path / "bundles", settings.CA_ROOT_PATH / "devices"
        bundles.mkdir()
        mount_point.mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", str(bundles), str(mount_point)], check=True)
        try:
            yield disk
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)
            forget_loaded_ca()


def test_a_revocation_rolled_back_by_a_full_disk_keeps_the_bundle(ca_on_tiny_disk: Path, token: str) -> None:
    operator = api(token)
    answer = register(operator, "full-disk")
    bundle = delivery.bundle_path(answer["id"])
    before = bundle.read_bytes()
    fill(ca_on_tiny_disk)

    response = operator.post(f"/revoke/{answer['id']}", {"reason": "keyCompromise"}, format="json")

    # The CRL could not be written, so nothing was revoked ...
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "crl_publication_failed"
    assert Device.objects.get(pk=answer["id"]).status == "active"
    assert Certificate.objects.get(device_id=answer["id"]).status == "active"
    assert DownloadLink.objects.get(device_id=answer["id"]).withdrawn_at is None
    # ... and nothing was deleted: the link still hands out the bundle, once.
    assert bundle.read_bytes() == before
    download = APIClient().get(link_path(answer))
    assert download.status_code == 200, download.content
    assert download.content == before


# --- 6. The broker catches up by itself ------------------------------------------------------


@pytest.fixture
def broker(
    request: pytest.FixtureRequest, ca: CertificateAuthority, settings: Any, tmp_path: Path
) -> Iterator[Broker]:
    """A real Mosquitto with the product's configuration: the ACL-file backend unless the test
    asks for another (indirect parametrisation)."""
    started = configured_broker(settings, tmp_path, getattr(request, "param", "mosquitto_acl"))
    try:
        yield started
    finally:
        stop_mosquitto(started)


def connects(broker: Broker, credentials: Credentials) -> bool:
    client = DeviceClient(broker, credentials)
    try:
        return client.connect(timeout=5)
    finally:
        client.close()


def denied_in_acl(settings: Any) -> set[str]:
    acl = Path(settings.BROKER_ACL_FILE).read_text()
    return {line.split()[1] for line in acl.splitlines() if line.startswith("user ")}


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> float:
    """Seconds until `condition` holds; fails the test after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


@pytest.mark.parametrize("broker", ["mosquitto_acl", "mosquitto_dynsec"], indirect=True)
@pytest.mark.parametrize("catch_up", ["repeated revoke", "scheduled sync"])
def test_a_broker_left_behind_is_brought_in_step(
    catch_up: str, broker: Broker, operator_api: APIClient, settings: Any, tmp_path: Path
) -> None:
    answer = register(operator_api, "left-behind")
    credentials = credentials_from_answer(operator_api, answer, tmp_path / "device")
    assert connects(broker, credentials)

    # The broker's files cannot be written while the device is revoked: the revocation stands
    # (database and CA CRL), the broker is not told.
    with read_only(broker.directory):
        response = operator_api.post(f"/revoke/{answer['id']}", {"reason": "keyCompromise"}, format="json")
        assert response.status_code == 200
    acl_backend = settings.BROKER_BACKEND == "mosquitto_acl"
    assert not acl_backend or answer["id"] not in denied_in_acl(settings)
    assert connects(broker, credentials)  # the broker still lets the revoked device in
    assert Device.objects.get(pk=answer["id"]).revocation_enforced_at is None

    started = time.monotonic()
    if catch_up == "repeated revoke":
        again = operator_api.post(f"/revoke/{answer['id']}", {"reason": "keyCompromise"}, format="json")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "already_revoked"
    else:
        assert settings.CELERY_BEAT_SCHEDULE["catch-up-broker"]["schedule"] <= 60
        assert broker_tasks.catch_up_broker_task() == "enforced"
    print(f"{settings.BROKER_BACKEND}, {catch_up}: in step and proven in {time.monotonic() - started:.2f} s")

    assert not acl_backend or answer["id"] in denied_in_acl(settings)
    ca_crl = (Path(settings.CA_ROOT_PATH) / "crl.pem").read_bytes()
    assert Path(settings.BROKER_CRL_FILE).read_bytes() == ca_crl
    assert not connects(broker, credentials)
    assert Device.objects.get(pk=answer["id"]).revocation_enforced_at is not None
    assert broker_lag() == []
    assert broker_tasks.catch_up_broker_task() == "in step"  # and nothing more to do


def test_an_enforcement_time_missed_by_a_misconfigured_probe_is_filled(
    broker: Broker, operator_api: APIClient, settings: Any, tmp_path: Path
) -> None:
    answer = register(operator_api, "unproven")
    credentials = credentials_from_answer(operator_api, answer, tmp_path / "device")
    port = settings.BROKER_PROBE_PORT
    settings.BROKER_PROBE_PORT = free_port()  # nothing listens there
    assert operator_api.post(f"/revoke/{answer['id']}").status_code == 200
    # The broker was given the CRL and told to reload; with no probe to wait on, the call returns
    # without waiting for the reload to take effect: it refuses the device moments later ...
    wait_for(lambda: not connects(broker, credentials), 5, "the broker to refuse the revoked device")
    assert Device.objects.get(pk=answer["id"]).revocation_enforced_at is None  # ... unproven
    assert broker_tasks.catch_up_broker_task() == "unproven"  # no proof to be had: no new CRL for nothing

    settings.BROKER_PROBE_PORT = port
    assert broker_tasks.catch_up_broker_task() == "enforced"
    assert Device.objects.get(pk=answer["id"]).revocation_enforced_at is not None
    assert broker_tasks.catch_up_broker_task() == "in step"


def broker_environment(settings: Any, broker: Broker, broker_url: str) -> dict[str, str]:
    """A subprocess's environment: this test's database, CA, task queue (or none) and broker."""
    return worker_environment(
        broker_url=broker_url,
        DATABASE_URL=subprocess_database_url(),
        **live_broker_environment(settings, broker.port),
        ALLOWED_HOSTS="127.0.0.1",
    )


def test_a_worker_that_starts_brings_a_broker_left_behind_in_step(
    broker: Broker, operator_api: APIClient, settings: Any, tmp_path: Path
) -> None:
    answer = register(operator_api, "worker-start")
    credentials = credentials_from_answer(operator_api, answer, tmp_path / "device")
    with read_only(broker.directory):
        assert operator_api.post(f"/revoke/{answer['id']}").status_code == 200
    assert connects(broker, credentials)  # left behind

    redis.Redis.from_url(REDIS_URL).flushdb()
    # A worker starts, and nothing else: it queues the catch-up when ready and runs it.
    with celery_worker(broker_environment(settings, broker, broker_url=REDIS_URL), name="catch-up"):
        took = wait_for(
            lambda: Device.objects.get(pk=answer["id"]).revocation_enforced_at is not None,
            timeout=60,
            what="the worker's catch-up",
        )
    print(f"a starting worker brought the broker in step {took:.2f} s after it was launched")
    assert answer["id"] in denied_in_acl(settings)
    assert not connects(broker, credentials)
    assert broker_lag() == []


DEVICES = 60
CLIENTS = 16


def test_after_a_crash_mid_revocation_the_broker_catches_up_at_restart(
    broker: Broker, operator_api: APIClient, token: str, settings: Any, tmp_path: Path
) -> None:
    answers = [register(operator_api, f"crash-{number}") for number in range(DEVICES)]
    credentials = {
        answer["id"]: credentials_from_answer(operator_api, answer, tmp_path / "devices" / answer["id"])
        for answer in answers
    }
    port = free_port()
    # No task queue: every revocation pushes to the broker from the web process.
    environment = broker_environment(settings, broker, broker_url="")
    headers = {"Authorization": f"Token {token}"}

    first_start = time.monotonic()
    with (
        gunicorn_server(environment, port, threads=4) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client,
    ):

        def revoke(device_id: str) -> int | None:
            try:
                return client.post(f"/revoke/{device_id}", json={"reason": "keyCompromise"}).status_code
            except httpx.HTTPError:
                return None  # the server died under it

        first_start = time.monotonic() - first_start

        def revoked_but_not_denied() -> bool:
            revoked = {str(pk) for pk in Device.objects.filter(status="revoked").values_list("pk", flat=True)}
            return bool(revoked - denied_in_acl(settings))

        with ThreadPoolExecutor(CLIENTS) as pool:
            started = time.monotonic()
            futures = [pool.submit(revoke, answer["id"]) for answer in answers]
            # SIGKILL 0.4 s in, or (on a loaded machine) as soon after as a revocation has been
            # committed and not yet given to the broker: the crash the report describes.
            time.sleep(0.4)
            wait_for(
                revoked_but_not_denied, timeout=60, what="a committed revocation to crash in", interval=0.01
            )
            os.killpg(server.pid, signal.SIGKILL)
            killed_at = time.monotonic() - started
            server.wait(timeout=30)
            outcomes = [future.result() for future in futures]

    revoked = {
        str(device_id) for device_id in Device.objects.filter(status="revoked").values_list("pk", flat=True)
    }
    behind = revoked - denied_in_acl(settings)
    print(
        f"killed after {killed_at:.2f} s: {len(revoked)} revoked in the database, "
        f"{outcomes.count(200)} answered, {len(behind)} missing from the broker's ACL"
    )
    assert revoked, "nothing was revoked before the kill"
    assert behind or broker_lag(), "the broker was not behind after the crash: the scenario did not happen"

    # Restarted, and nothing else: no request, no command, no unrelated change.
    restarted, restarted_at = time.monotonic(), timezone.now()
    with gunicorn_server(environment, port, threads=4):
        answering = time.monotonic() - restarted
        wait_for(
            lambda: (
                not broker_lag()
                and revoked <= denied_in_acl(settings)
                and not Device.objects.filter(status="revoked", revocation_enforced_at__isnull=True).exists()
            ),
            timeout=60,
            what="the broker to catch up after the restart",
        )
        caught_up = time.monotonic() - restarted
    print(
        f"first start answering after {first_start:.2f} s; restarted: answering after {answering:.2f} s, "
        f"broker caught up {caught_up:.2f} s after the restart"
    )
    proofs = Device.objects.filter(pk__in=behind).values_list("revocation_enforced_at", flat=True)
    proved = max((moment - restarted_at).total_seconds() for moment in proofs if moment is not None)
    print(f"the catch-up proved the missed revocations {proved:.2f} s after the restart began")
    assert caught_up < 60

    # The database, the CA's CRL and the broker's CRL agree.
    ca_crl = (Path(settings.CA_ROOT_PATH) / "crl.pem").read_bytes()
    assert Path(settings.BROKER_CRL_FILE).read_bytes() == ca_crl
    listed = {entry.serial_number for entry in x509.load_pem_x509_crl(ca_crl)}
    for device in Device.objects.all():
        serial = int(Certificate.objects.get(device=device).serial, 16)
        assert (serial in listed) == (device.status == "revoked"), device.pk
    assert denied_in_acl(settings) == revoked
    # A real client with each device's own credentials: every revoked device refused, no other.
    for device_id, device_credentials in credentials.items():
        assert connects(broker, device_credentials) == (device_id not in revoked), device_id


def test_a_download_the_disk_cannot_clean_up_after_still_hands_over_the_zip(operator_api: APIClient) -> None:
    """After the one download the holder has the ZIP and the link is used, whatever the disk
    says: a bundle the disk refuses to delete then is logged, and cleanup_bundles deletes it once
    the disk takes writes again (it answered 500 with the link already used up)."""
    answer = register(operator_api, "download-read-only")
    bundle = delivery.bundle_path(answer["id"])
    with read_only(bundle.parent):
        response = APIClient().get(link_path(answer))
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "application/zip"
        assert bundle.exists()
    assert APIClient().get(link_path(answer)).json()["error"]["code"] == "link_used"
    # Younger than SETTLED_AFTER, a file may belong to a registration still committing: kept.
    assert delivery.discard_expired_bundles() == 0 and bundle.exists()
    with time_machine.travel(timezone.now() + delivery.SETTLED_AFTER + dt.timedelta(seconds=1)):
        assert delivery.discard_expired_bundles() == 1
    assert not bundle.exists()
