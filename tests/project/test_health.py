"""GET /health: per-component checks, 503 naming what is wrong, nothing secret."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from rest_framework.test import APIClient

from broker.sync import sync_broker
from pki.crl import publish_crl
from pki.keystore import CertificateAuthority


@pytest.fixture
def synced(ca: CertificateAuthority, tmp_path: Path, settings: Any) -> None:
    settings.BROKER_ACL_FILE = tmp_path / "mosquitto.acl"
    settings.BROKER_CRL_FILE = tmp_path / "mosquitto-crl.pem"
    settings.BROKER_PROBE_DIR = tmp_path / "no-probe"
    # A CRL dated now: an earlier test may have left the session CA a CRL it published while
    # travelling in time, whose nextUpdate would outlast the stale-CRL test's jump.
    publish_crl()
    sync_broker()


def test_healthy(synced: None) -> None:
    response = APIClient().get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "ca", "crl", "acl_file", "data_dir", "task_queue", "broker"}
    assert all(check["status"] == "ok" for check in body["checks"].values())
    assert body["checks"]["task_queue"]["mode"] == "in-process"
    assert body["checks"]["broker"]["probe"] == "not configured (run mosquitto_config)"
    assert response["Cache-Control"] == "no-store"


def test_missing_ca_is_named(fresh_ca_root: Path, db: Any) -> None:
    response = APIClient().get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert {"ca", "crl"} <= set(body["failed"])
    assert body["checks"]["ca"]["message"] == "the CA has not been created"


def test_stale_crl_is_named(synced: None) -> None:
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=settings.CRL_VALIDITY_HOURS + 1)):
        response = APIClient().get("/health")
    assert response.status_code == 503
    assert "crl" in response.json()["failed"]


def test_unwritable_acl_location_is_named(synced: None, settings: Any) -> None:
    settings.BROKER_ACL_FILE = Path("/nonexistent-dir/mosquitto.acl")
    response = APIClient().get("/health")
    assert response.status_code == 503
    assert "acl_file" in response.json()["failed"]


def test_unreachable_task_queue_is_named(synced: None, settings: Any) -> None:
    from onboarding.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = False
    previous = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    try:
        response = APIClient().get("/health")
    finally:
        app.conf.broker_url = previous
    assert response.status_code == 503
    assert response.json()["failed"] == ["task_queue"]


def test_reveals_no_secrets_or_paths(ca: CertificateAuthority, fresh_ca_root: Path) -> None:
    text = APIClient().get("/health").content.decode()
    for secret in (
        settings.SECRET_KEY,
        settings.CA_KEY_PASSPHRASE,
        str(settings.DATA_DIR),
        str(fresh_ca_root),
    ):
        assert secret not in text


def test_broker_drift_is_named(synced: None, settings: Any) -> None:
    settings.BROKER_ACL_FILE.write_text("pattern readwrite #\n")  # someone edited the broker's ACL
    response = APIClient().get("/health")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]
    assert "ACL" in response.json()["checks"]["broker"]["message"]


def test_a_broker_change_waiting_too_long_is_named(synced: None) -> None:
    from broker.models import PendingChange

    fresh = PendingChange.objects.create(device_id="1c1c1c1c-1111-4c35-9d7e-0b0c0d0e0f10")
    assert APIClient().get("/health").status_code == 200  # a sync may be on its way
    PendingChange.objects.filter(pk=fresh.pk).update(
        queued_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    )
    response = APIClient().get("/health")
    assert response.status_code == 503
    assert "waited over 5 minutes" in str(response.json()["checks"]["broker"])
    sync_broker()  # a full sync covers every pending change
    assert not PendingChange.objects.exists()
    assert APIClient().get("/health").status_code == 200
