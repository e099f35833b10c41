"""nginx from `proxy_config` in front of the portal under gunicorn, on the test database, for the
EST tests that drive a real device side (curl and openssl, or the `onboard` client)."""

from __future__ import annotations

import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.management import call_command

from pki.keystore import CertificateAuthority
from tests.support.helpers import free_port
from tests.support.mosquitto import ACCEPTED, NOT_AUTHORIZED, Broker, Credentials, DeviceClient
from tests.support.workers import (
    gunicorn_portal,
    live_broker_environment,
    stop_process_group,
    worker_environment,
)

NGINX = "/usr/sbin/nginx"


@dataclass(frozen=True)
class Front:
    https: str  # through nginx
    direct: str  # straight to gunicorn
    ca_file: Path
    secret: str


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"nginx did not start: {log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.05)


@contextmanager
def tls_front(ca: CertificateAuthority, settings: Any, tmp_path: Path, **environment: str) -> Iterator[Front]:
    """nginx from `proxy_config` in front of the portal under gunicorn, on the test database, with a
    fresh proxy secret; `environment` adds to (or overrides) the worker's settings."""
    secret = secrets.token_urlsafe(32)
    settings.PROXY_SECRET = secret
    environment = {"DATA_DIR": str(tmp_path / "data"), "ALLOWED_HOSTS": "127.0.0.1", **environment}
    with gunicorn_portal(
        worker_environment(**environment, PROXY_SECRET=secret), tmp_path / "gunicorn.log"
    ) as url:
        port = free_port()
        out = tmp_path / "proxy"
        call_command("proxy_config", "--out", str(out), "--listen", f"127.0.0.1:{port}",
                     "--upstream", url.removeprefix("http://"), "--hostname", "127.0.0.1")  # fmt: skip
        (tmp_path / "ca.crt").write_bytes(ca.certificate_pem)
        log = tmp_path / "nginx.out"
        with log.open("wb") as output:
            nginx = subprocess.Popen(
                [NGINX, "-c", str(out / "nginx.conf"), "-g", "daemon off;"],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_port(port, nginx, log)
            yield Front(f"https://127.0.0.1:{port}", url, tmp_path / "ca.crt", secret)
        finally:
            stop_process_group(nginx)


@contextmanager
def enrollment_front(
    ca: CertificateAuthority, broker: Broker, settings: Any, tmp_path: Path
) -> Iterator[Front]:
    """nginx (proxy_config) in front of gunicorn; the portal signs in the request (no task queue)
    and keeps the test's broker in step."""
    with tls_front(
        ca, settings, tmp_path, broker_url="", **live_broker_environment(settings, broker.port)
    ) as front:
        yield front


def tls(front: Front) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(front.ca_file))


def register_for_est(front: Front, token: str, name: str, hardware_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "delivery": "est"}
    if hardware_id:
        body["hardware_id"] = hardware_id
    answer = httpx.post(
        f"{front.https}/api/v1/devices/",
        json=body,
        headers={"Authorization": f"Token {token}"},
        verify=tls(front),
    )
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()
    return data


def uses_its_topics(broker: Broker, directory: Path, device_id: str) -> None:
    (directory / "ca.crt").write_bytes(broker.ca_file.read_bytes())
    client = DeviceClient(broker, Credentials(device_id=device_id, directory=directory))
    try:
        assert client.connect(timeout=10), broker.log()[-2000:]
        client.subscribe(f"devices/{device_id}/#")
        assert client.publish(f"devices/{device_id}/telemetry", b"21.5") in ACCEPTED
        assert client.next_message(timeout=5) == (f"devices/{device_id}/telemetry", b"21.5")
        assert client.publish("devices/someone-else/telemetry") == NOT_AUTHORIZED
    finally:
        client.close()
