"""The device API end to end through HTTP: register, read, list, re-issue, revoke, delete."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection
from rest_framework.test import APIClient

from devices.models import Device, DeviceStatus, IdempotentRequest
from pki.keystore import CertificateAuthority, keystore
from pki.models import Certificate, CertificateStatus
from tests.support.api import post_register
from tests.support.helpers import assert_signed_by, make_csr, open_bundle, openssl_verify


def served_crl_serials(client: APIClient) -> set[int]:
    crl = x509.load_pem_x509_crl(client.get("/crl.pem").content)
    return {entry.serial_number for entry in crl}


class TestRegister:
    def test_server_generated_key(
        self, operator_api: APIClient, ca: CertificateAuthority, tmp_path: Path
    ) -> None:
        response = operator_api.post(
            "/register",
            {"name": "boiler-7", "hardware_id": "HW-7", "metadata": {"site": "Lyon"}},
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        device_id = body["id"]
        assert uuid.UUID(device_id)
        assert body["status"] == "active"
        assert body["metadata"] == {"site": "Lyon"}
        assert body["topics"] == [{"filter": f"devices/{device_id}/#", "access": "readwrite"}]
        assert body["certificate"]["key_type"] == "rsa2048"
        assert body["certificate"]["subject"] == f"CN={device_id}"

        certificate = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
        files = open_bundle(operator_api, body)
        key = serialization.load_pem_private_key(files["device.key"], password=None)
        assert key.public_key() == certificate.public_key()
        assert_signed_by(certificate, ca.certificate)
        assert body["ca_certificate_pem"] == keystore().certificate_path.read_text()
        (tmp_path / "device.crt").write_text(body["certificate_pem"])
        verify = openssl_verify(keystore().certificate_path, tmp_path / "device.crt", "-purpose", "sslclient")
        assert verify.returncode == 0, verify.stderr
        assert body["certificate"]["serial"] == format(certificate.serial_number, "X").zfill(
            len(body["certificate"]["serial"])
        )

    def test_csr(self, operator_api: APIClient) -> None:
        device_key = ec.generate_private_key(ec.SECP256R1())
        response = operator_api.post(
            "/register", {"name": "own-key", "csr": make_csr(device_key).decode()}, format="json"
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert "device.key" not in open_bundle(operator_api, body)
        certificate = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
        assert certificate.public_key() == device_key.public_key()
        assert body["certificate"]["key_type"] == "ec-p256"

    def test_bad_csr_is_a_specific_400_and_creates_nothing(self, operator_api: APIClient) -> None:
        response = operator_api.post(
            "/register", {"name": "x", "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_csr"
        assert Device.objects.count() == 0 and Certificate.objects.filter(device__isnull=False).count() == 0

    def test_key_type_is_ignored_with_a_csr(self, operator_api: APIClient) -> None:
        device_key = ec.generate_private_key(ec.SECP256R1())
        body = {"name": "x", "csr": make_csr(device_key).decode(), "key_type": "rsa2048"}
        response = operator_api.post("/register", body, format="json")
        assert response.status_code == 201
        assert response.json()["certificate"]["key_type"] == "ec-p256"

    def test_repeated_hardware_id_is_409_with_the_existing_id(self, operator_api: APIClient) -> None:
        first = post_register(operator_api, hardware_id="SN-1").json()
        response = post_register(operator_api, hardware_id="SN-1")
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "hardware_id_exists"
        assert error["device_id"] == first["id"]
        assert Device.objects.count() == 1

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": ""}, "name"),
            ({"name": "x" * 129}, "name"),
            ({"name": "line\nbreak"}, "name"),
            ({"name": " padded"}, "name"),
            ({"name": "ok", "hardware_id": ""}, "hardware_id"),
            ({"name": "ok", "key_type": "dsa1024"}, "key_type"),
            ({"name": "ok", "metadata": [1, 2]}, "metadata"),
            ({"name": "ok", "metadata": {"k": "v" * 9000}}, "metadata"),
            ({}, "name"),
        ],
    )
    def test_invalid_fields(self, operator_api: APIClient, body: dict[str, Any], field: str) -> None:
        response = operator_api.post("/register", body, format="json")
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid"
        assert field in error["fields"]
        assert Device.objects.count() == 0


class TestIdempotency:
    def test_retry_gets_the_first_answer(self, operator_api: APIClient) -> None:
        key = str(uuid.uuid4())
        first = operator_api.post("/register", {"name": "a"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
        again = operator_api.post("/register", {"name": "a"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again["Idempotent-Replayed"] == "true"
        assert Device.objects.count() == 1

    def test_stored_answer_is_encrypted(self, operator_api: APIClient) -> None:
        key = str(uuid.uuid4())
        body = operator_api.post("/register", {"name": "a"}, format="json", HTTP_IDEMPOTENCY_KEY=key).json()
        stored = bytes(IdempotentRequest.objects.get().encrypted_response)
        assert body["bundle_password"].encode() not in stored and body["id"].encode() not in stored
        assert key not in IdempotentRequest.objects.get().key_digest

    def test_same_key_for_another_request_is_refused(self, operator_api: APIClient) -> None:
        key = str(uuid.uuid4())
        operator_api.post("/register", {"name": "a"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
        response = operator_api.post("/register", {"name": "b"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert Device.objects.count() == 1

    def test_short_key_is_refused(self, operator_api: APIClient) -> None:
        response = operator_api.post("/register", {"name": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_idempotency_key"

    def test_keys_are_per_user(self, operator_api: APIClient, token_client: Any) -> None:
        key = str(uuid.uuid4())
        other = token_client("Operators", username="second-operator")
        first = operator_api.post("/register", {"name": "a"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
        second = other.post("/register", {"name": "a"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert first.json()["id"] != second.json()["id"]


class TestRead:
    def test_device_status_at_every_path(self, operator_api: APIClient) -> None:
        device_id = post_register(operator_api).json()["id"]
        answers = [
            operator_api.get(path)
            for path in (
                f"/device/{device_id}",
                f"/api/v1/device/{device_id}",
                f"/api/v1/devices/{device_id}",
            )
        ]
        assert all(answer.status_code == 200 for answer in answers)
        assert answers[0].json() == answers[1].json() == answers[2].json()
        body = answers[0].json()
        assert set(body["certificate"]) == {
            "serial",
            "fingerprint_sha256",
            "subject",
            "key_type",
            "not_before",
            "not_after",
            "status",
            "revocation_reason",
            "revoked_at",
        }
        assert "bundle_password" not in body and "download_url" not in body

    @pytest.mark.parametrize("device_id", [str(uuid.uuid4()), "not-a-uuid", "1"])
    def test_unknown_or_malformed_id_is_404(self, operator_api: APIClient, device_id: str) -> None:
        response = operator_api.get(f"/device/{device_id}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "device_not_found"

    def test_list_filters_search_and_ordering(self, operator_api: APIClient, settings: Any) -> None:
        ids = {
            name: post_register(operator_api, name=name, hardware_id=f"HW-{name}").json()["id"]
            for name in "abc"
        }
        operator_api.post(f"/revoke/{ids['b']}", {}, format="json")
        listing = operator_api.get("/api/v1/devices/?ordering=name").json()
        assert listing["count"] == 3
        assert [device["name"] for device in listing["results"]] == ["a", "b", "c"]
        revoked = operator_api.get("/api/v1/devices/?status=revoked").json()
        assert [device["id"] for device in revoked["results"]] == [ids["b"]]
        assert operator_api.get("/api/v1/devices/?search=HW-c").json()["results"][0]["id"] == ids["c"]
        page = operator_api.get("/api/v1/devices/?page_size=2&ordering=-name").json()
        assert [device["name"] for device in page["results"]] == ["c", "b"] and page["next"]
        expiring = operator_api.get("/api/v1/devices/?expiring_within_days=400").json()
        assert {device["id"] for device in expiring["results"]} == {ids["a"], ids["c"]}
        assert operator_api.get("/api/v1/devices/?expiring_within_days=10").json()["count"] == 0
        assert operator_api.get("/api/v1/devices/?status=bogus").status_code == 400
        # A page number is one whole number from 1; empty or repeated is an error, not page 1.
        for bad in ("page=", "page=0", "page=x", "page=1&page=2"):
            refused = operator_api.get(f"/api/v1/devices/?{bad}")
            assert refused.status_code == 400 and "page" in refused.json()["error"]["fields"], bad
        assert operator_api.get("/api/v1/devices/?page=2&page_size=2").json()["results"]

    def test_no_n_plus_one(self, operator_api: APIClient, django_assert_max_num_queries: Any) -> None:
        from django.test.utils import CaptureQueriesContext

        def queries(path: str) -> int:
            with CaptureQueriesContext(connection) as context:
                assert operator_api.get(path).status_code == 200
            return len(context.captured_queries)

        first_id = post_register(operator_api).json()["id"]
        one = queries("/api/v1/devices/")
        for index in range(5):
            post_register(operator_api, name=f"more-{index}")
        assert queries("/api/v1/devices/") == one
        # Authentication (token, user, permissions) plus device and its certificates.
        with django_assert_max_num_queries(6):
            operator_api.get(f"/device/{first_id}")


class TestRevoke:
    def test_revoke_puts_the_serial_on_the_served_crl(self, operator_api: APIClient, client: Any) -> None:
        body = post_register(operator_api).json()
        response = operator_api.post(f"/revoke/{body['id']}", {"reason": "keyCompromise"}, format="json")
        assert response.status_code == 200
        revoked = response.json()
        assert revoked["status"] == "revoked"
        assert revoked["certificate"]["status"] == "revoked"
        assert revoked["certificate"]["revocation_reason"] == "keyCompromise"
        assert revoked["topics"] == []
        assert int(body["certificate"]["serial"], 16) in served_crl_serials(client)

    def test_revoking_twice_is_409_and_adds_no_crl(self, operator_api: APIClient, client: Any) -> None:
        device_id = post_register(operator_api).json()["id"]
        operator_api.post(f"/revoke/{device_id}", {}, format="json")
        before = client.get("/crl.pem").content
        response = operator_api.post(f"/api/v1/devices/{device_id}/revoke", {}, format="json")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "already_revoked"
        assert client.get("/crl.pem").content == before

    def test_unknown_reason_is_400(self, operator_api: APIClient) -> None:
        device_id = post_register(operator_api).json()["id"]
        response = operator_api.post(f"/revoke/{device_id}", {"reason": "lost"}, format="json")
        assert response.status_code == 400
        assert Device.objects.get().status == DeviceStatus.ACTIVE

    def test_delete_revokes_instead_of_losing_the_certificate(
        self, operator_api: APIClient, client: Any
    ) -> None:
        body = post_register(operator_api).json()
        assert operator_api.delete(f"/api/v1/devices/{body['id']}").status_code == 204
        assert not Device.objects.exists()
        certificate = Certificate.objects.get(serial=body["certificate"]["serial"])
        assert certificate.status == CertificateStatus.REVOKED
        assert certificate.revocation_reason == "cessationOfOperation"
        assert int(body["certificate"]["serial"], 16) in served_crl_serials(client)


class TestReissue:
    def test_rotation_supersedes_the_old_certificate(self, operator_api: APIClient, client: Any) -> None:
        first = post_register(operator_api).json()
        first_key = open_bundle(operator_api, first)["device.key"]
        response = operator_api.post(f"/api/v1/devices/{first['id']}/reissue", {}, format="json")
        assert response.status_code == 201, response.content
        second = response.json()
        assert second["id"] == first["id"]
        assert second["certificate"]["serial"] != first["certificate"]["serial"]
        assert second["certificate"]["key_type"] == "ec-p256"
        assert open_bundle(operator_api, second)["device.key"] != first_key
        assert second["topics"] == first["topics"]
        old = Certificate.objects.get(serial=first["certificate"]["serial"])
        assert old.status == CertificateStatus.REVOKED and old.revocation_reason == "superseded"
        assert old.serial_number in served_crl_serials(client)
        assert Device.objects.get().status == DeviceStatus.ACTIVE

    def test_csr_device_needs_a_new_csr(self, operator_api: APIClient) -> None:
        csr = make_csr(ec.generate_private_key(ec.SECP256R1())).decode()
        device_id = operator_api.post("/register", {"name": "own", "csr": csr}, format="json").json()["id"]
        response = operator_api.post(f"/api/v1/devices/{device_id}/reissue", {}, format="json")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "csr_required"
        new_csr = make_csr(ec.generate_private_key(ec.SECP256R1())).decode()
        assert (
            operator_api.post(
                f"/api/v1/devices/{device_id}/reissue", {"csr": new_csr}, format="json"
            ).status_code
            == 201
        )

    def test_revoked_device_cannot_be_reissued(self, operator_api: APIClient) -> None:
        device_id = post_register(operator_api).json()["id"]
        operator_api.post(f"/revoke/{device_id}", {}, format="json")
        response = operator_api.post(f"/api/v1/devices/{device_id}/reissue", {}, format="json")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "invalid_state"


class TestErrors:
    def test_malformed_json(self, operator_api: APIClient) -> None:
        response = operator_api.post("/register", '{"name": ', content_type="application/json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_json"

    def test_wrong_content_type(self, operator_api: APIClient) -> None:
        response = operator_api.post("/register", "name=x", content_type="application/x-www-form-urlencoded")
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "unsupported_media_type"

    def test_oversized_body(self, operator_api: APIClient, settings: Any) -> None:
        body = '{"name": "' + "x" * (settings.API_MAX_BODY_BYTES + 10) + '"}'
        response = operator_api.post("/register", body, content_type="application/json")
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"

    def test_wrong_method(self, operator_api: APIClient) -> None:
        response = operator_api.get("/register")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_unknown_api_path_is_json_404(self, operator_api: APIClient) -> None:
        response = operator_api.get("/api/v1/nothing-here")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "not_found"

    def test_missing_ca_is_503(self, operator_api: APIClient, fresh_ca_root: Path) -> None:
        response = post_register(operator_api)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "ca_not_initialized"
        assert str(fresh_ca_root) not in response.content.decode()  # server paths stay in the log
        assert Device.objects.count() == 0

    def test_throttling(self, ca: CertificateAuthority, settings: Any) -> None:
        from django.core.cache import cache

        cache.clear()
        settings.API_THROTTLE_RATES = {"anon": "3/minute", "user": "1000/minute"}
        answers = [APIClient().get("/health").status_code for _ in range(4)]
        assert answers[:3] == [200, 200, 200] or all(code != 429 for code in answers[:3])
        response = APIClient().get("/health")
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "throttled"
        cache.clear()


class TestAuthentication:
    def test_no_credentials_is_401(self, ca: CertificateAuthority) -> None:
        response = APIClient().post("/register", {"name": "x"}, format="json")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
        assert response.json()["error"]["code"] == "not_authenticated"

    def test_wrong_token_is_401(self, ca: CertificateAuthority) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token iotp_not-a-real-token")
        response = client.get("/api/v1/devices/")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "authentication_failed"

    def test_expired_token_is_401(self, ca: CertificateAuthority, make_user: Any) -> None:
        import time_machine

        from accounts.services import create_api_token

        created = create_api_token(make_user("late", "Operators"), expires_days=1)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {created.value}")
        assert client.get("/api/v1/devices/").status_code == 200
        with time_machine.travel(created.token.expires_at, tick=False):
            response = client.get("/api/v1/devices/")
        assert response.status_code == 401
        assert "expired" in response.json()["error"]["message"]

    def test_session_needs_the_second_factor(
        self, ca: CertificateAuthority, make_user: Any, verified_login: Any
    ) -> None:
        password_only = APIClient()
        password_only.force_login(make_user("viewer", "Auditors"))
        assert password_only.get("/api/v1/devices/").status_code in {401, 403}
        verified = verified_login(APIClient(), make_user("verified-viewer", "Auditors"))
        assert verified.get("/api/v1/devices/").status_code == 200
