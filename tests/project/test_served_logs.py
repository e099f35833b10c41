"""The whole log of a served portal holds no download token, bundle password, API token or key.

Two real servers, as operators run them: `make run` (development: runserver, plain lines,
Django's own request and access loggers) and gunicorn with deploy/gunicorn_config.py in
production mode (JSON lines, the access log turned on as an operator might). Each gets a
registration, a download, a refused second download, an unknown link and a wrong scheme; then
every line the process wrote is searched. The production server also answers the CRL and the CA
certificate over plain HTTP while everything else is redirected to HTTPS (RFC 5280 relying
parties fetch CRL distribution points over HTTP).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT
from tests.support.helpers import free_port

KEEP = {"PATH", "HOME", "LANG", "TMPDIR"}
HTTPS = {"X-Forwarded-Proto": "https"}
# Anything after /download/ but the redaction marker is a leaked token.
UNREDACTED_LINK = re.compile(r"/download/(?!\[redacted\])[^\s\"'/?#]+")


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def operator_token(self) -> str:
        self.manage(
            "shell",
            "--no-imports",
            "-c",
            "from django.contrib.auth.models import Group, User; "
            "User.objects.create_user('log-operator').groups.add(Group.objects.get(name='Operators'))",
        )
        return self.manage("create_api_token", "log-operator").strip().splitlines()[-1]

    def stop(self) -> str:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        return self.log.read_text()


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            # As the proxy in front would say it: HTTPS (production redirects everything else).
            if httpx.get(f"{url}/health", headers=HTTPS, timeout=10).status_code in (200, 503):
                return
        except httpx.TransportError:
            time.sleep(0.3)
    pytest.fail(f"the server did not answer:\n{log.read_text()[-3000:]}")


def _start(command: list[str], env: dict[str, str], url: str, log: Path) -> Server:
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(url, process, log, env)
    try:
        _wait(url, process, log)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def development(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key in KEEP}
    env |= {"DATA_DIR": str(tmp_path / "data"), "PORTAL_URL": f"http://127.0.0.1:{port}"}
    server = _start(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        env,
        f"http://127.0.0.1:{port}",
        tmp_path / "make-run.log",
    )
    server.env = {**env, "DEBUG": "true"}
    yield server
    server.stop()


@pytest.fixture
def production(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    data = tmp_path / "data"
    env = {key: value for key, value in os.environ.items() if key in KEEP}
    env |= {
        "DATA_DIR": str(data),
        "SECRET_KEY": secrets.token_urlsafe(40),
        "CA_KEY_PASSPHRASE": secrets.token_urlsafe(24),
        "ALLOWED_HOSTS": "127.0.0.1",
        "PORTAL_URL": f"https://127.0.0.1:{port}",
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
        "LOG_FORMAT": "json",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "2",
    }
    (data / "staticfiles").mkdir(parents=True)
    for step in (["migrate", "--no-input"], ["init_ca", "--key-type", "ec-p256"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *step], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    command = [
        sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn_config.py",
        "--access-logfile", "-", "onboarding.wsgi",
    ]  # fmt: skip
    server = _start(command, env, f"http://127.0.0.1:{port}", tmp_path / "gunicorn.log")
    yield server
    server.stop()


def _exercise(server: Server, headers: dict[str, str]) -> dict[str, str]:
    """Register, download, download again, an unknown link, a wrong scheme: the secrets seen."""
    api_token = server.operator_token()
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        registered = client.post(
            "/register",
            json={"name": "log-probe", "key_type": "ec-p256"},
            headers={"Authorization": f"Token {api_token}"},
        )
        assert registered.status_code == 201, registered.text
        body = registered.json()
        path = "/download/" + body["download_url"].rsplit("/download/", 1)[1]
        assert client.get(path).status_code == 200
        assert client.get(path).status_code == 410  # used: refused, and Django logs the path
        unknown = secrets.token_urlsafe(32)
        assert client.get(f"/download/{unknown}").status_code in (404, 410)
        assert client.get(f"/download/{unknown}?x=1").status_code in (404, 410)
        wrong = client.get("/api/v1/devices", headers={"Authorization": f"Bearer {api_token}"})
        assert wrong.status_code == 401
    return {
        "download token": path.rsplit("/", 1)[1],
        "unknown download token": unknown,
        "bundle password": body["bundle_password"],
        "API token": api_token,
        "API token body": api_token.split("_", 1)[1],
    }


def _assert_clean(log: str, seen: dict[str, str], configured: dict[str, str]) -> None:
    for what, value in {**seen, **configured}.items():
        assert value not in log, f"the {what} is in the log"
    assert "PRIVATE KEY" not in log
    assert not UNREDACTED_LINK.findall(log), UNREDACTED_LINK.findall(log)
    # Scrubbed, not silenced: the refused downloads are still logged.
    assert "/download/[redacted]" in log


def test_make_run_log_holds_no_secret(development: Server) -> None:
    seen = _exercise(development, {})
    log = development.stop()
    data = Path(development.env["DATA_DIR"])
    configured = {
        "CA passphrase": (data / "ca_passphrase").read_text().strip(),
        "SECRET_KEY": (data / "secret_key").read_text().strip(),
    }
    _assert_clean(log, seen, configured)
    # Django's request logger and runserver's access log both went through the filter.
    assert re.search(r"WARNING django\.request Gone: /download/\[redacted\]", log), log[-2000:]
    assert re.search(r'django\.server "GET /download/\[redacted\] HTTP/1\.1" 410', log), log[-2000:]


def test_production_json_log_holds_no_secret(production: Server) -> None:
    seen = _exercise(production, HTTPS)
    log = production.stop()
    configured = {
        "CA passphrase": production.env["CA_KEY_PASSPHRASE"],
        "SECRET_KEY": production.env["SECRET_KEY"],
    }
    _assert_clean(log, seen, configured)
    django_lines = [json.loads(line) for line in log.splitlines() if line.startswith('{"time"')]
    refused = [line for line in django_lines if line["logger"] == "django.request"]
    assert any(line["message"] == "Gone: /download/[redacted]" for line in refused), refused
    # gunicorn's access log, turned on here, carries the redacted path too.
    assert re.search(r'"GET /download/\[redacted\] HTTP/1\.1" 410', log), log[-2000:]


def test_production_serves_pki_material_over_http_and_redirects_the_rest(production: Server) -> None:
    with httpx.Client(base_url=production.url, timeout=30) as plain:
        for path in ("/ca.crl", "/crl.pem", "/ca.crt"):
            response = plain.get(path)
            assert response.status_code == 200, (path, response.status_code, response.headers)
            assert "Strict-Transport-Security" not in response.headers
        assert plain.get("/ca.crl").headers["Content-Type"] == "application/pkix-crl"
        for path in ("/", "/portal/login/", "/api/v1/devices", "/api/docs/", "/ca.crl/x", "/x/ca.crl"):
            response = plain.get(path)
            assert response.status_code == 301, (path, response.status_code)
            assert response.headers["Location"].startswith("https://"), path
