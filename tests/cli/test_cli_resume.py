"""`onboard bulk-register` against a portal that dies mid-run, then comes back (issue #16 item 20).

Everything real: gunicorn serving the portal, killed with SIGKILL (master and workers) while the
CLI, a real subprocess, is registering; the CLI must stop with exit code 3 and one clear line.
The portal is started again and the same command resumes: every row is registered exactly once
(counted in the database), none fails with `409 request_in_progress`, and it does not wait out
the 10 minutes a claim used to be held by a request that died.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from devices.models import Device, IdempotentRequest
from pki.keystore import CertificateAuthority
from tests.support.helpers import free_port, subprocess_database_url, superuser_token
from tests.support.workers import gunicorn_server

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 24
ONBOARD = str(Path(sys.executable).with_name("onboard"))


def portal_environment(port: int, data_dir: Path) -> dict[str, str]:
    """The portal signing in-process (no task queue), on the test database and CA."""
    environment = {key: value for key, value in os.environ.items() if key != "CELERY_BROKER_URL"}
    return {
        **environment,
        "DJANGO_SETTINGS_MODULE": "onboarding.settings",
        "CA_ROOT_PATH": str(settings.CA_ROOT_PATH),
        "DATABASE_URL": subprocess_database_url(),
        "DATA_DIR": str(data_dir),
        "BROKER_ACL_FILE": str(settings.BROKER_ACL_FILE),
        "BROKER_CRL_FILE": str(settings.BROKER_CRL_FILE),
        "BROKER_PROBE_DIR": str(settings.BROKER_PROBE_DIR),
        "PORTAL_URL": f"http://127.0.0.1:{port}",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
    }


@pytest.fixture
def api_token(ca: CertificateAuthority) -> str:
    return superuser_token("fleet-script")


def bulk_register(rows: Path, url: str, token: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [ONBOARD, "bulk-register", str(rows), "--url", url, "--token", token, "--concurrency", "4"],
        cwd=rows.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def result_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_bulk_register_survives_a_portal_killed_mid_run_and_resumes_once_per_row(
    ca: CertificateAuthority,
    broker_files: None,
    api_token: str,
    tmp_path: Path,
) -> None:
    rows = tmp_path / "fleet.csv"
    with rows.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "hardware_id", "key_type"])
        # Half with a hardware id, half without: those have only the Idempotency-Key between
        # a retry and a second device. RSA-3072 keys make each request last long enough that
        # the kill lands in the middle of some.
        for number in range(ROWS):
            writer.writerow([f"meter-{number}", f"HW-{number:03d}" if number % 2 else "", "rsa3072"])
    results = tmp_path / "fleet.results.csv"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = portal_environment(port, tmp_path / "data")

    with gunicorn_server(environment, port) as server:
        cli = bulk_register(rows, url, api_token)
        deadline = time.monotonic() + 120
        while len(result_rows(results)) < 3:
            assert cli.poll() is None and time.monotonic() < deadline, cli.communicate()
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGKILL)
        out, err = cli.communicate(timeout=60)

    assert cli.returncode == 3, (out, err)
    assert "Traceback" not in err and "CancelledError" not in err
    messages = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("onboard:")]
    assert len(messages) == 1 and messages[0].startswith(f"onboard: Cannot reach the portal at {url}")
    assert "run again to resume" in messages[0]
    # The kill did leave claims of requests that were under way (the case to recover from).
    assert IdempotentRequest.objects.filter(status_code=0).exists()
    assert Device.objects.count() < ROWS

    with gunicorn_server(environment, port):
        started = time.monotonic()
        cli = bulk_register(rows, url, api_token)
        out, err = cli.communicate(timeout=300)
        resumed_in = time.monotonic() - started

    assert cli.returncode == 0, (out, err)
    assert " 0 failed" in out
    final = {int(row["line"]): row for row in result_rows(results)}
    assert len(final) == ROWS
    assert {row["status"] for row in final.values()} == {"registered"}, final
    assert not any("request_in_progress" in row["error"] for row in result_rows(results))
    # Exactly one device per row, and the results name those devices.
    names = sorted(Device.objects.values_list("name", flat=True))
    assert names == sorted(f"meter-{number}" for number in range(ROWS))
    assert {row["device_id"] for row in final.values()} == {
        str(pk) for pk in Device.objects.values_list("pk", flat=True)
    }
    assert not IdempotentRequest.objects.filter(status_code=0).exists()
    # The dead claims were taken over at once, not after the old 10-minute expiry.
    assert resumed_in < 90
