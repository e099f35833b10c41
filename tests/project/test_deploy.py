"""The production stack: the compose file (validated offline), the image's rules, `check --deploy`,
and gunicorn serving the portal, its static files and /metrics as the image runs it."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support import ROOT
from tests.support.helpers import free_port, manage, manage_shell, without_settings_variables

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENV = {"PORTAL_HOST": "portal.example.com", "BROKER_PUBLIC_HOST": "mqtt.example.com"}
SIGNING_SERVICES = {"init", "web", "worker"}
PORTAL_IMAGE_SERVICES = {"init", "web", "worker", "beat"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def _volume_names(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> mount options ('ro' or 'rw')."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, _target, *options = entry.split(":")
        mounts[source] = options[0] if options else "rw"
    return mounts


class TestComposeValidation:
    def test_compose_spec_schema(self, tmp_path: Path) -> None:
        """The official compose-spec JSON schema (vendored, with its license, by check-jsonschema)."""
        command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        result = subprocess.run([*command, str(COMPOSE_FILE)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        broken = tmp_path / "docker-compose.yml"
        broken.write_text(
            COMPOSE_FILE.read_text().replace("\n  redis:\n", "\n  redis:\n    restrat: always\n", 1)
        )
        refused = subprocess.run([*command, str(broken)], capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "restrat" in refused.stdout + refused.stderr

    def test_docker_compose_config(self, tmp_path: Path) -> None:
        """Compose itself resolves the file: interpolation, anchors, references to volumes,
        secrets and services. Debian's docker-compose needs no engine for `config`."""
        if shutil.which("docker-compose"):
            command = ["docker-compose"]
        elif subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
            command = ["docker", "compose"]
        else:
            pytest.fail("docker-compose is needed to validate docker-compose.yml; `.ci/run` installs it.")
        clean = {key: value for key, value in os.environ.items() if key not in COMPOSE_ENV}
        result = subprocess.run(
            [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
            env={**clean, **COMPOSE_ENV},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        # Required settings are enforced: without PORTAL_HOST the stack does not start.
        missing = subprocess.run(
            [*command, "-f", str(COMPOSE_FILE), "--project-directory", str(tmp_path), "config", "-q"],
            env={**clean, "BROKER_PUBLIC_HOST": "mqtt.example.com"},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert missing.returncode != 0 and "set PORTAL_HOST" in missing.stderr


class TestComposeInvariants:
    def test_the_ca_volume_only_on_services_that_sign(self, compose: dict[str, Any]) -> None:
        with_ca = {name for name, service in compose["services"].items() if "ca" in _volume_names(service)}
        assert with_ca == SIGNING_SERVICES
        with_passphrase = {
            name
            for name, service in compose["services"].items()
            if "ca_key_passphrase" in service.get("secrets", [])
            or "CA_KEY_PASSPHRASE_FILE" in (service.get("environment") or {})
        }
        assert with_passphrase == SIGNING_SERVICES

    def test_beat_runs_without_the_ca(self, compose: dict[str, Any]) -> None:
        beat = compose["services"]["beat"]
        assert beat["environment"]["CA_KEY_PASSPHRASE_REQUIRED"] == "false"
        assert "DATABASE_PASSWORD_FILE" not in beat["environment"]
        assert set(beat["secrets"]) == {"secret_key"}

    def test_mosquitto_gets_the_broker_volume_read_only_and_nothing_else(
        self, compose: dict[str, Any]
    ) -> None:
        mosquitto = compose["services"]["mosquitto"]
        assert _volume_names(mosquitto) == {"broker": "ro"}
        assert "secrets" not in mosquitto and "environment" not in mosquitto
        assert "mosquitto.internal" in mosquitto["networks"]["default"]["aliases"]

    def test_every_long_running_service_has_a_healthcheck(self, compose: dict[str, Any]) -> None:
        for name, service in compose["services"].items():
            if name != "init":
                assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"

    def test_portal_containers_are_locked_down(self, compose: dict[str, Any]) -> None:
        for name in PORTAL_IMAGE_SERVICES | {"mosquitto"}:
            service = compose["services"][name]
            assert service.get("user") in (None,), f"{name} overrides the image's non-root user"
            assert service["read_only"] is True
            assert service["cap_drop"] == ["ALL"]
            assert "no-new-privileges:true" in service["security_opt"]

    def test_secrets_come_from_files_never_inline(self, compose: dict[str, Any]) -> None:
        secret_like = re.compile(r"(SECRET|PASSWORD|PASSPHRASE|TOKEN)", re.I)
        for name, service in compose["services"].items():
            for key, value in (service.get("environment") or {}).items():
                if secret_like.search(key) and key != "CA_KEY_PASSPHRASE_REQUIRED":
                    assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, key)
            database_url = (service.get("environment") or {}).get("DATABASE_URL")
            assert database_url is None or urlsplit(database_url).password is None, name
        assert all("file" in secret for secret in compose["secrets"].values())

    def test_the_proxy_runs_what_init_wrote_and_holds_no_secret_of_its_own(
        self, compose: dict[str, Any]
    ) -> None:
        proxy = compose["services"]["proxy"]
        assert _volume_names(proxy) == {"proxy": "ro"}
        assert "secrets" not in proxy and "environment" not in proxy
        assert proxy["read_only"] is True and proxy["cap_drop"] == ["ALL"]
        assert "-c" in proxy["entrypoint"] and "/srv/proxy/nginx.conf" in proxy["entrypoint"]
        # init writes the configuration (it signs the server certificate) with the secret web reads.
        assert _volume_names(compose["services"]["init"])["proxy"] == "rw"
        for name in ("init", "web"):
            assert (
                compose["services"][name]["environment"]["PROXY_SECRET_FILE"] == "/run/secrets/proxy_secret"
            )
            assert "proxy_secret" in compose["services"][name]["secrets"]
        init_script = (ROOT / "deploy" / "init.sh").read_text()
        assert "proxy_config --out /srv/proxy --listen 8443 --upstream web:8000" in init_script
        assert proxy["ports"] == ["${PORTAL_HTTPS_PORT:-443}:8443"]

    def test_web_publishes_only_on_loopback(self, compose: dict[str, Any]) -> None:
        assert compose["services"]["web"]["ports"] == ["127.0.0.1:${WEB_PORT:-8000}:8000"]

    def test_every_setting_the_stack_passes_is_one_the_portal_reads(self, compose: dict[str, Any]) -> None:
        settings_source = (ROOT / "onboarding" / "settings.py").read_text()
        known_elsewhere = {
            "PROMETHEUS_MULTIPROC_DIR"
        }  # read by prometheus_client and deploy/gunicorn_config.py
        for name in PORTAL_IMAGE_SERVICES:
            for key in compose["services"][name].get("environment") or {}:
                assert (
                    key in known_elsewhere
                    or f'"{key}"' in settings_source
                    or f'"{key.removesuffix("_FILE")}"' in settings_source
                ), key


class TestImage:
    def test_dockerfile(self) -> None:
        text = (ROOT / "Dockerfile").read_text()
        stages = re.split(r"^FROM ", text, flags=re.M)[1:]
        app = next(stage for stage in stages if stage.startswith("python:3.11-slim AS app"))
        broker = next(stage for stage in stages if " AS broker" in stage.splitlines()[0])
        users = re.findall(r"^USER (\S+)", app, flags=re.M)
        assert users == ["app"]
        assert "--uid 10001" in app
        assert re.findall(r"^USER (\S+)", broker, flags=re.M) == ["10001:10001"]
        assert "collectstatic" in app and "STATIC_MANIFEST=true" in app
        assert 'CMD ["gunicorn", "--config", "deploy/gunicorn_config.py", "onboarding.wsgi"]' in app
        # The last stage is the default build target: the portal's image, not the broker's.
        assert stages[-1] is app
        assert "install -d -o app -g app -m 0700 /srv/data /srv/ca" in app

    def test_dockerignore_keeps_local_state_out(self) -> None:
        ignored = (ROOT / ".dockerignore").read_text().split()
        for entry in (".git", ".venv", ".env", "var", "secrets"):
            assert entry in ignored


def _production_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'devices.db'}",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "CA_KEY_PASSPHRASE": secrets.token_urlsafe(24),
        "ALLOWED_HOSTS": "portal.example.com",
        "PORTAL_URL": "https://portal.example.com",
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
        "BROKER_ACL_FILE": str(tmp_path / "broker" / "mosquitto.acl"),
        "BROKER_CRL_FILE": str(tmp_path / "broker" / "mosquitto-crl.pem"),
    }


def _prepared(tmp_path: Path) -> dict[str, str]:
    env = _production_env(tmp_path)
    for command in (["migrate", "--no-input"], ["init_ca", "--key-type", "ec-p256"], ["broker_sync"]):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stderr
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    env = _prepared(tmp_path)
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout
    settings = manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings as s; print(s.SECURE_HSTS_SECONDS, "
        "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, s.SECURE_PROXY_SSL_HEADER, "
        "s.CSRF_TRUSTED_ORIGINS)",
        env=env,
    )
    assert settings.stdout.strip().splitlines()[-1] == (
        "31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https') ['https://portal.example.com']"
    )


def test_a_process_without_the_ca_passphrase(tmp_path: Path) -> None:
    """What beat runs with: settings load, and any use of the CA is refused in one sentence."""
    env = {
        "DATA_DIR": str(tmp_path),
        "SECRET_KEY": "s" * 50,
        "CA_KEY_PASSPHRASE_REQUIRED": "false",
        "CA_ROOT_PATH": str(tmp_path / "certs"),
    }
    code = (
        "from pki.keystore import get_ca\n"
        "from pki.errors import CAKeyError\n"
        "try:\n    get_ca()\nexcept CAKeyError as exc:\n    print(exc.message)\n"
    )
    printed = manage_shell(code, env)
    assert "runs without CA_KEY_PASSPHRASE" in printed
    assert (
        manage("check", env={key: value for key, value in env.items() if "REQUIRED" not in key}).returncode
        == 2
    )


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One request, straight to the socket: no proxy from the environment, no redirect followed."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", parts.path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_gunicorn_serves_the_portal_static_files_and_metrics(tmp_path: Path) -> None:
    env = _prepared(tmp_path)
    port = free_port()
    token = secrets.token_urlsafe(32)
    env.update(
        {
            "STATIC_ROOT": str(tmp_path / "static"),
            "STATIC_MANIFEST": "true",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "2",
            "PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
            "METRICS_TOKEN": token,
            "LOG_FORMAT": "json",
        }
    )
    collected = manage("collectstatic", "--no-input", "--verbosity", "0", env=env)
    assert collected.returncode == 0, collected.stderr
    clean = without_settings_variables()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn_config.py", "onboarding.wsgi"],
        cwd=ROOT,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    https = {"Host": "portal.example.com", "X-Forwarded-Proto": "https"}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        # The container health check, as compose runs it.
        health = subprocess.run(
            [sys.executable, "deploy/healthcheck.py"],
            cwd=ROOT,
            env={**clean, **env},
            capture_output=True,
            text=True,
        )
        assert health.returncode == 0, health.stderr
        # Plain HTTP from outside the proxy is sent to HTTPS; through the proxy it is served.
        assert _get(f"{base}/", {"Host": "portal.example.com"})[0] == 301
        status, headers, _ = _get(f"{base}/", https)
        assert status == 200 and "max-age=31536000" in headers["Strict-Transport-Security"]
        manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())["paths"]
        hashed = manifest["admin/css/base.css"]
        status, headers, body = _get(f"{base}/static/{hashed}", {**https, "Accept-Encoding": "gzip"})
        assert status == 200 and headers.get("Content-Encoding") == "gzip"
        assert "immutable" in headers["Cache-Control"]
        # Metrics: every gunicorn worker's requests, summed, and the product's own figures.
        for _ in range(4):
            _get(f"{base}/health", https)
        status, _, body = _get(f"{base}/metrics", {**https, "Authorization": f"Bearer {token}"})
        assert status == 200
        text = body.decode()
        assert "onboarding_crl_number" in text and "onboarding_certificates_issued_total" in text
        assert re.search(r'django_http_responses_total_by_status_total\{status="200"\} [1-9]', text)
        assert _get(f"{base}/metrics", https)[0] == 401
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    # No access log: paths (download tokens among them) never reach the output.
    assert "GET /" not in output


@pytest.mark.slow
def test_the_broker_container_reloads_when_the_portal_asks(
    ca: Any, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/mosquitto-run.sh with a real Mosquitto: the portal in another container writes a
    reload request (BROKER_RELOAD_COMMAND as the stack sets it) and the broker enforces the new CRL."""
    import io

    from django.core.management import call_command

    from broker.probe import issue_sync_canary
    from broker.sync import enforce_now
    from pki.revocation import revoke_certificate

    port = free_port()
    directory = tmp_path / "broker"
    settings.BROKER_BACKEND = "mosquitto_acl"
    settings.BROKER_ACL_FILE = directory / "mosquitto.acl"
    settings.BROKER_CRL_FILE = directory / "mosquitto-crl.pem"
    settings.BROKER_PROBE_DIR = tmp_path / "probe"
    settings.MOSQUITTO_PID_FILE = ""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    command = compose["x-portal-environment"]["BROKER_RELOAD_COMMAND"]
    settings.BROKER_RELOAD_COMMAND = command.replace("/srv/broker", str(directory))
    settings.BROKER_PUBLIC_HOST = settings.BROKER_PROBE_HOST = "127.0.0.1"
    settings.BROKER_PUBLIC_PORT = settings.BROKER_PROBE_PORT = port
    call_command("mosquitto_config", "--out", str(directory), "--port", str(port), "--bind", "127.0.0.1",
                 stdout=io.StringIO())  # fmt: skip
    clean = without_settings_variables()
    broker = subprocess.Popen(
        ["sh", str(ROOT / "deploy" / "mosquitto-run.sh")],
        env={
            **clean,
            "MOSQUITTO_CONFIG": str(directory / "mosquitto.conf"),
            "RELOAD_REQUEST": str(directory / "reload-request"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        canary = issue_sync_canary()
        revoke_certificate(canary.record)
        # The revoke path: sync, reload through the request file, wait until the canary is refused.
        assert enforce_now(canary)[0] is not None
        assert broker.poll() is None
    finally:
        os.killpg(broker.pid, signal.SIGTERM)
        output = broker.communicate(timeout=30)[0].decode()
    assert broker.returncode == 0, output
    assert "Reloading config" in output, output
