"""`make run`, the README's first command, serves the portal with a CA and no other service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx
from cryptography import x509

from tests.support import ROOT
from tests.support.helpers import free_port


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
        links_follow_the_port(port, env, tmp_path)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert (tmp_path / "data" / "certs" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o777 == 0o600


def links_follow_the_port(port: int, env: dict[str, str], tmp_path: Path) -> None:
    """A registration on the portal `make run PORT=...` serves: its download link and its
    certificate's CRL distribution point name that port, and the README's curl download works."""
    manage = {**env, "DEBUG": "true", "DJANGO_SUPERUSER_PASSWORD": "a-long-test-password"}
    python = str(ROOT / ".venv/bin/python")
    subprocess.run(
        [python, "manage.py", "createsuperuser", "--no-input", "--username=ops", "--email=o@x.example"],
        cwd=ROOT, env=manage, check=True, capture_output=True,
    )  # fmt: skip
    token = subprocess.run(
        [python, "manage.py", "create_api_token", "ops"],
        cwd=ROOT, env=manage, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    response = httpx.post(
        f"http://127.0.0.1:{port}/register",
        json={"name": "first-device", "key_type": "ec-p256"},
        headers={"Authorization": f"Token {token}"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["download_url"].startswith(f"http://127.0.0.1:{port}/download/")
    certificate = x509.load_pem_x509_certificate(answer["certificate_pem"].encode())
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [name.value for point in points for name in point.full_name or []] == [
        f"http://127.0.0.1:{port}/ca.crl"
    ]
    # The README's download, as a newcomer types it.
    bundle = tmp_path / "creds.zip"
    subprocess.run(["curl", "-sSf", "-o", str(bundle), answer["download_url"]], check=True, timeout=30)
    assert bundle.read_bytes().startswith(b"PK")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ca.crl", timeout=5) as response:
        x509.load_der_x509_crl(response.read())
