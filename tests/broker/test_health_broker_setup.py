"""Issue #21 item 8: /health on a fresh install is 200 with the broker `not_configured`; once a
broker is set up (a configuration generated, or BROKER_* settings naming one) and failing, 503."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from pki.keystore import CertificateAuthority
from tests.support.helpers import free_port

NOT_CONFIGURED = {
    "status": "not_configured",
    "message": "no broker is set up yet: run mosquitto_config or set BROKER_PUBLIC_HOST",
}


@pytest.fixture
def fresh_install(ca: CertificateAuthority, settings: Any, tmp_path: Path) -> Path:
    """As after `make run`: a CA, no broker configuration, no BROKER_* settings."""
    settings.BROKER_ACL_FILE = tmp_path / "mosquitto.acl"
    settings.BROKER_CRL_FILE = tmp_path / "mosquitto-crl.pem"
    settings.BROKER_PROBE_DIR = tmp_path / "broker-probe"
    settings.MOSQUITTO_PID_FILE = settings.BROKER_RELOAD_COMMAND = ""
    settings.BROKER_PUBLIC_HOST = settings.BROKER_PROBE_HOST = None
    settings.BROKER_PUBLIC_PORT = settings.BROKER_PROBE_PORT = None
    return tmp_path


def test_a_fresh_install_is_healthy_with_the_broker_not_configured(fresh_install: Path) -> None:
    response = APIClient().get("/health")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and "failed" not in body
    assert body["checks"]["broker"] == NOT_CONFIGURED


def test_the_start_up_catch_up_leaves_a_fresh_install_not_configured(fresh_install: Path) -> None:
    """The web process's catch-up at start (onboarding/wsgi.py, also under runserver) finds no
    broker to catch up with: it writes no broker files and records no sync, so /health still says
    `not_configured` (it used to sync, and the sync made the broker count as set up)."""
    from broker.dispatch import catch_up_broker
    from broker.models import BrokerSync

    assert catch_up_broker() == "no broker set up"
    assert not BrokerSync.objects.exists()
    assert not (fresh_install / "mosquitto.acl").exists()
    assert APIClient().get("/health").json()["checks"]["broker"] == NOT_CONFIGURED


def test_a_generated_configuration_with_no_broker_running_is_a_failure(fresh_install: Path) -> None:
    port = free_port()
    call_command("mosquitto_config", "--out", str(fresh_install / "broker"), "--port", str(port),
                 stdout=io.StringIO())  # fmt: skip
    response = APIClient().get("/health")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]
    assert response.json()["checks"]["broker"]["message"] == (
        f"could not connect to the broker at 127.0.0.1:{port} (Connection refused)"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BROKER_PUBLIC_HOST", "127.0.0.1"),
        ("BROKER_PROBE_PORT", "free"),
        ("MOSQUITTO_PID_FILE", "/run/mosquitto/mosquitto.pid"),
        ("BROKER_RELOAD_COMMAND", "systemctl reload mosquitto"),
    ],
)
def test_settings_naming_a_broker_make_it_set_up(
    fresh_install: Path, settings: Any, name: str, value: str
) -> None:
    setattr(settings, name, free_port() if value == "free" else value)
    response = APIClient().get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "fail"
