"""gunicorn settings for the image (`gunicorn --config deploy/gunicorn_config.py onboarding.wsgi`)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from kernel.logs import RedactSecrets

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# Heartbeat files on tmpfs: the container's root file system is read-only.
worker_tmp_dir = "/dev/shm"  # noqa: S108 - the tmpfs gunicorn documents for this
# No access log: a request line carries the path, and /download/<token> paths are credentials.
# Requests are counted and timed in /metrics instead; errors are logged by Django (redacted).
accesslog = None
errorlog = "-"
# gunicorn's own lines pass the portal's redacting filter too: "Error handling request <uri>"
# names the path, and so does every access-log line if an operator turns the access log on.
for _name in ("gunicorn.error", "gunicorn.access"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(existing, RedactSecrets) for existing in _logger.filters):
        _logger.addFilter(RedactSecrets())
# X-Forwarded-* is trusted from the proxy in front (TRUSTED_PROXY_COUNT, SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server: Any) -> None:
    """Each worker writes its metrics to PROMETHEUS_MULTIPROC_DIR; start from an empty one."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(mode=0o700, parents=True)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
