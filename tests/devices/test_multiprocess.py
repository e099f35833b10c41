"""Consistency across processes: two gunicorn workers and two Celery workers on one database
and one Redis, hit by 500 concurrent registrations and then 200 concurrent revocations.

Nothing here shares memory: the CRL and ACL writers of four processes serialise through the
database (PostgreSQL advisory lock; on SQLite, the lock file beside the database).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography import x509

from broker.dispatch import SYNC_PENDING_KEY
from broker.sync import broker_drift
from devices.models import Device
from pki.keystore import CertificateAuthority
from pki.models import Certificate, CertificateRevocationList
from tests.support.helpers import superuser_token
from tests.support.workers import REDIS_URL, celery_worker, gunicorn_portal, worker_environment

pytestmark = pytest.mark.django_db(transaction=True)

REGISTRATIONS = 500
REVOCATIONS = 200
CLIENTS = 16


@pytest.fixture
def token(ca: CertificateAuthority) -> str:
    return superuser_token("fleet-script")


@pytest.fixture
def portal(broker_files: None, ca: CertificateAuthority, tmp_path: Path) -> Iterator[str]:
    """The portal under gunicorn (2 worker processes) and two Celery worker processes."""
    queue = redis.Redis.from_url(REDIS_URL)
    queue.flushdb()
    environment = worker_environment(
        DATA_DIR=str(tmp_path / "data"), SECURE_SSL_REDIRECT="false", ALLOWED_HOSTS="127.0.0.1"
    )
    with (
        gunicorn_portal(environment, tmp_path / "gunicorn.log") as url,
        celery_worker(environment, name="one"),
        celery_worker(environment, name="two"),
    ):
        yield url


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


def test_concurrent_registrations_and_revocations_end_consistent(
    portal: str, token: str, settings: Any
) -> None:
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=portal, headers=headers, timeout=120) as client:

        def register(number: int) -> httpx.Response:
            body = {"name": f"fleet-{number}", "hardware_id": f"FLEET-{number:04d}", "key_type": "ec-p256"}
            return client.post("/register", json=body)

        with ThreadPoolExecutor(CLIENTS) as pool:
            registered = list(pool.map(register, range(REGISTRATIONS)))
        assert {response.status_code for response in registered} == {202}
        device_ids = [response.json()["id"] for response in registered]

        wait_until(
            lambda: Device.objects.filter(status="active").count() == REGISTRATIONS,
            timeout=300,
            what="every device provisioned by the workers",
        )

        doomed = device_ids[:REVOCATIONS]
        with ThreadPoolExecutor(CLIENTS) as pool:
            revoked = list(pool.map(lambda device_id: client.post(f"/revoke/{device_id}"), doomed))
        assert {response.status_code for response in revoked} == {200}

    # The debounced broker syncs have run once nothing is queued any more.
    queue = redis.Redis.from_url(REDIS_URL)
    wait_until(
        lambda: not (queue.exists(SYNC_PENDING_KEY) or queue.llen("celery") or broker_drift()),
        timeout=120,
        what="the broker files to match the database",
    )

    # One certificate per device, no serial twice.
    certificates = Certificate.objects.filter(device_id__in=device_ids)
    assert certificates.count() == REGISTRATIONS
    serials = list(certificates.values_list("serial", flat=True))
    assert len(set(serials)) == len(serials)
    assert Device.objects.filter(status="revoked").count() == REVOCATIONS
    assert Device.objects.filter(status="active").count() == REGISTRATIONS - REVOCATIONS

    # Every revoked serial is on the CA's CRL and on the broker's copy.
    def serial_numbers(chosen: Any) -> set[int]:
        return {int(serial, 16) for serial in chosen.values_list("serial", flat=True)}

    revoked_serials = serial_numbers(certificates.filter(device_id__in=doomed))
    active_serials = serial_numbers(certificates.exclude(device_id__in=doomed))
    for path in (Path(settings.CA_ROOT_PATH) / "crl.pem", Path(settings.BROKER_CRL_FILE)):
        listed = {entry.serial_number for entry in x509.load_pem_x509_crl(path.read_bytes())}
        assert revoked_serials <= listed
        assert not listed & active_serials

    # CRL numbers grew strictly, one per publication, whichever process signed.
    numbers = list(CertificateRevocationList.objects.order_by("pk").values_list("number", flat=True))
    assert numbers == sorted(set(numbers))
    assert len(numbers) >= REVOCATIONS

    # The broker's rights: every revoked device denied, no active one.
    acl = Path(settings.BROKER_ACL_FILE).read_text()
    assert "pattern readwrite devices/%u/#" in acl
    denied = {line.split()[1] for line in acl.splitlines() if line.startswith("user ")}
    assert denied == set(doomed)
