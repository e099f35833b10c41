"""Real Celery workers for the tests: subprocesses on the test database and a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def database_url() -> str:
    """The test database as a DATABASE_URL, for processes started by a test."""
    config = connection.settings_dict
    if config["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{config['NAME']}"
    credentials = quote(config["USER"] or "")
    if config["PASSWORD"]:
        credentials += ":" + quote(config["PASSWORD"])
    host = config["HOST"] or "localhost"
    port = f":{config['PORT']}" if config["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{config['NAME']}"


def worker_environment(broker_url: str = REDIS_URL, **extra: str) -> dict[str, str]:
    """What a worker process needs: the same CA, database, broker files and task queue."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "onboarding.settings",
        "CA_ROOT_PATH": str(settings.CA_ROOT_PATH),
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker_url,
        "BROKER_ACL_FILE": str(settings.BROKER_ACL_FILE),
        "BROKER_CRL_FILE": str(settings.BROKER_CRL_FILE),
        "BROKER_PROBE_DIR": str(settings.BROKER_PROBE_DIR),
        **extra,
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
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
