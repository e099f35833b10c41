"""`make run`, the README's first command, serves the portal with a CA and no other service."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_make_run_serves_the_portal_with_a_ca(tmp_path: Path) -> None:
    port = free_port()
    keep = {"PATH", "HOME", "LANG", "TMPDIR"}
    env = {key: value for key, value in os.environ.items() if key in keep}
    env["DATA_DIR"] = str(tmp_path / "data")
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        body = ""
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert "IoT Device Onboarding Root CA" in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/crl.pem", timeout=5) as response:
            assert response.read().startswith(b"-----BEGIN X509 CRL-----")
        # No broker is set up yet: that is not a failure (a 503 here reads as a server error).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read())["checks"]["broker"]["status"] == "not_configured"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert (tmp_path / "data" / "certs" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o777 == 0o600
