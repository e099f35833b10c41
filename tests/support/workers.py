"""Real Celery workers for the tests: subprocesses on the test database and a real Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from tests.support import ROOT
from tests.support.helpers import free_port, subprocess_database_url

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def worker_environment(broker_url: str = REDIS_URL, **extra: str) -> dict[str, str]:
    """What a worker process needs: the same CA, database, broker files and task queue."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "onboarding.settings",
        "CA_ROOT_PATH": str(settings.CA_ROOT_PATH),
        "DATABASE_URL": subprocess_database_url(),
        "CELERY_BROKER_URL": broker_url,
        "BROKER_ACL_FILE": str(settings.BROKER_ACL_FILE),
        "BROKER_CRL_FILE": str(settings.BROKER_CRL_FILE),
        "BROKER_PROBE_DIR": str(settings.BROKER_PROBE_DIR),
        **extra,
    }


def live_broker_environment(settings: Any, port: int) -> dict[str, str]:
    """A worker's settings for the test's running Mosquitto on `port`: its backend, the pid file to
    signal, and the host and port devices are told about and the probe connects to."""
    return {
        "BROKER_BACKEND": settings.BROKER_BACKEND,
        "MOSQUITTO_PID_FILE": settings.MOSQUITTO_PID_FILE,
        "BROKER_PUBLIC_HOST": "127.0.0.1",
        "BROKER_PUBLIC_PORT": str(port),
        "BROKER_PROBE_HOST": "127.0.0.1",
        "BROKER_PROBE_PORT": str(port),
    }


@contextmanager
def celery_worker(
    environment: Mapping[str, str] | None = None, *, module: str = "celery", name: str = "test"
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker (solo pool) for the duration of the block; stopped with SIGTERM after it."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, "-A", "onboarding", "worker", "--pool", "solo", "-l", "warning",
         "-n", f"{name}-{os.getpid()}@%h"],
        cwd=ROOT,
        env=dict(environment or worker_environment()),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group a test started (unless the test killed it already), SIGKILL
    after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def gunicorn_server(
    environment: Mapping[str, str],
    port: int,
    *,
    workers: int = 2,
    threads: int = 1,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """The portal under gunicorn on 127.0.0.1:`port`, answering, for the duration of the block;
    stopped with SIGTERM after it (unless the test killed it already). Its output goes to `log`
    (a temporary file by default): a pipe nobody reads fills up with request warnings and then
    blocks every worker in the middle of a request."""
    with contextlib.ExitStack() as stack:
        if log is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gunicorn-"))) / "gunicorn.log"
        output = stack.enter_context(log.open("wb"))
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", str(threads),
             "--bind", f"127.0.0.1:{port}", "--timeout", "120", "onboarding.wsgi"],
            cwd=ROOT,
            env=dict(environment),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ca.crt", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"gunicorn did not start: {log.read_text(errors='replace')[-4000:]}")
                time.sleep(0.05)
            yield server
        finally:
            stop_process_group(server)


@contextmanager
def gunicorn_portal(environment: Mapping[str, str], log: Path, workers: int = 2) -> Iterator[str]:
    """`gunicorn_server` on a free port, logging to `log`: yields its URL."""
    port = free_port()
    with gunicorn_server(environment, port, workers=workers, log=log):
        yield f"http://127.0.0.1:{port}"
