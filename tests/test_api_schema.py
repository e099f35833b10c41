"""The OpenAPI schema, and schemathesis testing the API against it, in process."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric import ec
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings, strategies
from rest_framework.test import APIClient
from schemathesis.config import SchemathesisConfig

from pki.keystore import CertificateAuthority
from tests.test_profiles import make_csr


@pytest.fixture
def api_schema(ca: CertificateAuthority, settings: Any, tmp_path: Any) -> Iterator[Any]:
    from broker.services import sync_broker
    from onboarding.wsgi import application

    # A healthy portal (broker files in step), so /health answers 200 and any 5xx is a finding.
    settings.BROKER_ACL_FILE = tmp_path / "mosquitto.acl"
    settings.BROKER_CRL_FILE = tmp_path / "mosquitto-crl.pem"
    settings.BROKER_PROBE_DIR = tmp_path / "probe"
    sync_broker()

    # Requests go straight to the WSGI app, so do what Django's test client does: keep the
    # test's database connection (and its transaction) open across requests.
    for signal in (signals.request_started, signals.request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=CONFIG)
    finally:
        for signal in (signals.request_started, signals.request_finished):
            signal.connect(close_old_connections)


@pytest.fixture
def auth_header(token_client: Any) -> dict[str, str]:
    client = token_client("Operators")
    return {"Authorization": client._credentials["HTTP_AUTHORIZATION"]}


# All checks, with one change: 413 (body over API_MAX_BODY_BYTES) counts as rejecting bad input,
# as it does; schemathesis's default list of rejections lacks it. Generated text holds no U+0000:
# PostgreSQL cannot store it, so the API refuses it as malformed (400) on every database.
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"allow-x00": False},
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5XX"]
            }
        },
    }
)

# Real CSRs for the "pem-csr" format the schema declares, so schema-valid requests are valid.
CSR_POOL = [make_csr(ec.generate_private_key(ec.SECP256R1()), f"pool-{index}").decode() for index in range(8)]
schemathesis.openapi.format("pem-csr", strategies.sampled_from(CSR_POOL))

schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
# Exploratory (new random examples each run) on developer machines; the same examples in CI,
# so a landing depends on the code, not on the draw.
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("CI") == "true",
)
def test_api_conforms_to_its_schema(case: Any, auth_header: dict[str, str]) -> None:
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(r"[\x21-\x7e]{16,255}", key):
        # Generated examples reuse valid keys across different bodies, which the API rightly
        # refuses (422, as the IETF Idempotency-Key draft says); a real client uses one key per
        # request, so each valid key is made unique. Reuse itself is tested in test_api_devices.
        case.headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4()}"
    case.call_and_validate(headers=auth_header)


def test_schema_documents_every_endpoint_and_its_errors(ca: CertificateAuthority) -> None:
    document = APIClient().get("/api/schema/?format=json").json()
    paths = document["paths"]
    for path in ("/register", "/device/{id}", "/revoke/{id}", "/health", "/api/v1/devices/{id}/reissue/"):
        assert path in paths, sorted(paths)
    register = paths["/register"]["post"]
    assert {"201", "400", "401", "403", "409", "413", "415", "503"} <= set(register["responses"])
    assert "Error" in document["components"]["schemas"]


def test_swagger_ui_is_served_without_a_cdn(ca: CertificateAuthority) -> None:
    html = APIClient().get("/api/docs/").content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
