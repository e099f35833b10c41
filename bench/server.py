"""A real portal served by gunicorn for the HTTP benchmarks, on a private DATA_DIR.

The bench process makes the portal as an operator would: `migrate` and `init_ca` (no key type
given: the product default, an RSA-3072 CA), an API user in the Integrators role and its token
from `manage.py create_api_token`. No CELERY_BROKER_URL: tasks run in-process, so every
registration is signed and packaged inside its request. Everything goes when the run ends.

gunicorn runs as the image runs it (deploy/gunicorn_config.py): 2 workers of the gthread class
with 4 threads each. Two processes use the two cores; the threads let a worker overlap one
request's waits (SQLite's commit, the bundle's fsync, a client that reads slowly) with another
request's work, and they keep connections alive, so the load generator measures requests, not
TCP handshakes. The sync class would close the connection after every response.

`tls_front` puts Debian's nginx in front of it, configured by `manage.py proxy_config` (TLS on
127.0.0.1 with a server certificate from the portal's CA, which clients pin), as EST devices and
the compose stack reach the portal.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import ROOT, setup_django

API_USER = "bench-integrator"
WORKERS = 2
THREADS = 4
READY_TIMEOUT_SECONDS = 60.0
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # Debian's, in /usr/sbin


@dataclass(frozen=True)
class ServedPortal:
    url: str
    token: str
    data_dir: Path
    workers: int
    threads: int
    #: gunicorn's master; its workers are its children
    pid: int

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=timeout
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _create_api_user() -> str:
    """An integrator (the role scripts use), and its token from the management command."""
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from accounts import roles

    user = User.objects.create_user(API_USER, password=None)
    user.groups.add(Group.objects.get(name=roles.INTEGRATORS))
    connection.close()
    made = subprocess.run(
        [sys.executable, "manage.py", "create_api_token", API_USER, "--name", "bench"],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip()


def _wait_until_ready(url: str, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            answer = httpx.get(f"{url}/bench/bare", headers={"Authorization": f"Token {token}"}, timeout=5)
            if answer.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"gunicorn did not answer within {READY_TIMEOUT_SECONDS:.0f} s:\n{log.read_text()[-3000:]}"
    )


@contextmanager
def served_portal(workers: int = WORKERS, threads: int = THREADS) -> Iterator[ServedPortal]:
    """Make a portal, serve it with gunicorn, and remove everything afterwards."""
    # A terminated benchmark still stops its gunicorn and removes its data (finally, below).
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    os.environ["PORTAL_URL"] = url  # download links in the answers point at this server
    data_dir = setup_django(ca_key_type=None)
    token = _create_api_user()
    # WhiteNoise warns about a missing STATIC_ROOT at start-up; the API serves no static files.
    (data_dir / "staticfiles").mkdir(exist_ok=True)
    log = data_dir / "gunicorn.log"
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.http_settings"}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread",
        "--bind", f"127.0.0.1:{port}", "--timeout", "120", "--worker-tmp-dir", "/dev/shm",  # noqa: S108 - as the image
        "--log-level", "warning", "onboarding.wsgi:application",
    ]  # fmt: skip
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log_file, stderr=log_file)
    try:
        _wait_until_ready(url, token, process, log)
        yield ServedPortal(
            url=url, token=token, data_dir=data_dir, workers=workers, threads=threads, pid=process.pid
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass(frozen=True)
class TLSFront:
    """Debian's nginx in front of a served portal, configured by `manage.py proxy_config`."""

    url: str
    #: the portal's CA certificate, which clients pin
    ca_file: Path
    #: nginx's master; its workers are its children
    pid: int

    def tls_context(self) -> ssl.SSLContext:
        """Trust the portal's CA only, as a device that pins it does."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _wait_for_front(url: str, context: ssl.SSLContext, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/.well-known/est/cacerts", verify=context, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"nginx did not answer within {READY_TIMEOUT_SECONDS:.0f} s:\n{log.read_text()[-3000:]}"
    )


@contextmanager
def tls_front(portal: ServedPortal) -> Iterator[TLSFront]:
    """nginx with the configuration `proxy_config` writes (server certificate from the portal's
    CA for 127.0.0.1, TLS, optional client certificates), in front of `portal`'s gunicorn; its
    files go with the portal's DATA_DIR. The portal needs PROXY_SECRET in its environment."""
    from django.core.management import call_command

    from pki.keystore import keystore

    port = free_port()
    out = portal.data_dir / "proxy"
    call_command(
        "proxy_config", "--out", str(out), "--listen", f"127.0.0.1:{port}",
        "--upstream", portal.url.removeprefix("http://"), "--hostname", "127.0.0.1",
        stdout=open(os.devnull, "w"),  # noqa: SIM115
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    log = portal.data_dir / "nginx.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [NGINX, "-c", str(out / "nginx.conf"), "-g", "daemon off;"], stdout=log_file, stderr=log_file
        )
    front = TLSFront(url=url, ca_file=keystore().certificate_path, pid=process.pid)
    try:
        _wait_for_front(url, front.tls_context(), process, log)
        yield front
    finally:
        process.terminate()  # nginx's fast shutdown: the master stops its workers
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
