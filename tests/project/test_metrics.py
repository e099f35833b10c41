"""GET /metrics: who may scrape it, and the product's figures following the data."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from broker.sync import sync_broker
from pki.crl import publish_crl
from pki.issuance import issue_certificate
from pki.keystore import CertificateAuthority
from pki.models import Certificate
from pki.profiles import KeyType
from pki.revocation import revoke_certificate
from tests.support.helpers import open_bundle
from tests.support.metrics import TOKEN, scrape, value


@pytest.fixture
def metrics_token(settings: Any) -> str:
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    return TOKEN


class TestAccess:
    def test_nothing_configured_refuses_everyone(self, client: Client, settings: Any, db: None) -> None:
        settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
        response = client.get("/metrics")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "metrics_forbidden"

    def test_token_required_and_checked(self, client: Client, metrics_token: str, db: None) -> None:
        missing = client.get("/metrics")
        assert missing.status_code == 401
        assert missing["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert missing.json()["error"]["code"] == "metrics_token_required"
        wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "metrics_token_invalid"
        assert TOKEN not in wrong.content.decode()
        right = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert right.status_code == 200
        assert b"onboarding_certificates_issued_total" in right.content
        # django-prometheus's own request metrics come with them.
        assert b"django_http_requests_total_by_method_total" in right.content

    def test_allowed_network(self, client: Client, settings: Any, db: None) -> None:
        settings.METRICS_TOKEN = ""
        settings.METRICS_ALLOWED_NETWORKS = ["10.20.0.0/16", "::1"]
        assert client.get("/metrics", REMOTE_ADDR="10.20.3.4").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
        refused = client.get("/metrics", REMOTE_ADDR="10.21.0.1")
        assert refused.status_code == 403 and refused["Content-Type"] == "application/json"

    def test_not_cached_and_read_only(self, client: Client, metrics_token: str, db: None) -> None:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
        assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_certificate_and_crl_figures_follow_the_data(
    client: Client, ca: CertificateAuthority, metrics_token: str
) -> None:
    publish_crl()
    before = scrape(client)
    issued = value(before, "onboarding_certificates_issued_total", purpose="device")
    revoked = value(before, "onboarding_certificates_revoked_total", purpose="device")
    expiring = value(before, "onboarding_certificates_expiring")
    crl_number = value(before, "onboarding_crl_number")
    assert 0 <= value(before, "onboarding_crl_age_seconds") < 60
    assert value(before, "onboarding_crl_next_update_seconds") > 3600

    soon = issue_certificate("metrics-soon", key_type=KeyType.EC_P256, validity_days=10).record
    issue_certificate("metrics-later", key_type=KeyType.EC_P256, validity_days=365)
    revoke_certificate(soon)
    after = scrape(client)
    assert value(after, "onboarding_certificates_issued_total", purpose="device") == issued + 2
    assert value(after, "onboarding_certificates_revoked_total", purpose="device") == revoked + 1
    # The revoked one no longer counts as expiring; one issued for 10 days would have.
    assert value(after, "onboarding_certificates_expiring") == expiring
    assert value(after, "onboarding_crl_number") == crl_number + 1

    issue_certificate("metrics-expiring", key_type=KeyType.EC_P256, validity_days=20)
    assert value(scrape(client), "onboarding_certificates_expiring") == expiring + 1

    with time_machine.travel(timezone.now() + dt.timedelta(hours=2)):
        aged = scrape(client)
    assert 7190 < value(aged, "onboarding_crl_age_seconds") < 7300
    assert value(aged, "onboarding_crl_next_update_seconds") == pytest.approx(
        value(after, "onboarding_crl_next_update_seconds") - 7200, abs=60
    )


def test_broker_sync_lag(
    client: Client, ca: CertificateAuthority, metrics_token: str, settings: Any, tmp_path
) -> None:
    settings.BROKER_ACL_FILE = tmp_path / "mosquitto.acl"
    settings.BROKER_CRL_FILE = tmp_path / "mosquitto-crl.pem"
    settings.MOSQUITTO_PID_FILE, settings.BROKER_RELOAD_COMMAND = "", ""
    sync_broker(reload=False)
    synced = scrape(client)
    assert value(synced, "onboarding_broker_sync_lag_seconds") == 0
    assert value(synced, "onboarding_broker_last_sync_timestamp_seconds") == pytest.approx(
        timezone.now().timestamp(), abs=30
    )
    # A CRL the broker has not been given yet: the lag grows from the moment it was signed.
    publish_crl()
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=5)):
        lagging = scrape(client)
    assert 290 < value(lagging, "onboarding_broker_sync_lag_seconds") < 330
    sync_broker(reload=False)
    assert value(scrape(client), "onboarding_broker_sync_lag_seconds") == 0


def test_download_link_states(
    client: Client, ca: CertificateAuthority, metrics_token: str, operator_api: APIClient
) -> None:
    def links() -> dict[str, float]:
        samples = scrape(client)
        return {
            state: value(samples, "onboarding_download_links", state=state)
            for state in ("used", "expired", "waiting")
        }

    start = links()
    first = operator_api.post("/register", {"name": "m1", "key_type": "ec-p256"}, format="json").json()
    operator_api.post("/register", {"name": "m2", "key_type": "ec-p256"}, format="json")
    assert links()["waiting"] == start["waiting"] + 2
    open_bundle(operator_api, first)
    now = links()
    assert now["used"] == start["used"] + 1 and now["waiting"] == start["waiting"] + 1
    with time_machine.travel(timezone.now() + dt.timedelta(days=1)):
        later = links()
    assert later["expired"] == now["expired"] + now["waiting"] and later["waiting"] == 0
    assert Certificate.objects.count() >= 2
