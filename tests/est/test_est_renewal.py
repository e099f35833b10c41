"""EST simplereenroll (RFC 7030 4.2.2) and the renewal policy, through Django with the headers the
TLS front sets (proxy.client_cert). The same loop through real nginx, gunicorn, curl, openssl and
Mosquitto is in tests/est/test_est_renewal_e2e.py."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.test import Client

from audit.models import AuditAction, AuditEvent
from devices.checks import check_renewal_settings
from devices.models import Device
from devices.renewal import renewal_due_devices, renewal_opens_at, revoke_superseded_certificates
from pki.issuance import issue_certificate
from pki.keystore import CertificateAuthority
from pki.models import Certificate, CertificateStatus
from pki.profiles import KeyType, serial_hex
from tests.support.helpers import assert_crl_contains, assert_signed_by, lint_certificate_file

SECRET = "renewal-proxy-secret-" + "x" * 24
PATH = "/.well-known/est/simplereenroll"


def csr_der(key: ec.EllipticCurvePrivateKey, common_name: str = "whatever") -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def pem_csr(key: ec.EllipticCurvePrivateKey) -> str:
    der = csr_der(key)
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM).decode()


def front_headers(certificate_pem: str, secret: str = SECRET) -> dict[str, Any]:
    """What nginx (proxy_config) adds for a client certificate it verified."""
    return {
        "HTTP_X_CLIENT_CERT": quote(certificate_pem, safe=""),
        "HTTP_X_CLIENT_VERIFY": "SUCCESS",
        "HTTP_X_PROXY_SECRET": secret,
    }


def reenroll(certificate_pem: str | None, body: bytes, **extra: str) -> Any:
    headers: dict[str, Any] = front_headers(certificate_pem) if certificate_pem else {}
    return Client().post(
        PATH,
        data=base64.b64encode(body),
        content_type="application/pkcs10",
        HTTP_ACCEPT="application/json",
        secure=True,
        **{**headers, **extra},
    )


def issued_from(answer: Any) -> x509.Certificate:
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert answer["Content-Transfer-Encoding"] == "base64"
    (certificate,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer.content))
    return certificate


@pytest.fixture
def front(settings: Any, ca: CertificateAuthority, broker_files: None) -> None:
    settings.PROXY_SECRET = SECRET


@pytest.fixture
def device(front: None, operator_api: Any) -> tuple[dict[str, Any], ec.EllipticCurvePrivateKey]:
    """A device registered the normal way: the API, with a CSR of its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    answer = operator_api.post("/register", {"name": "gateway", "csr": pem_csr(key)}, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json(), key


def certificate_pem(device_id: str) -> str:
    row = Device.objects.get_with_current_certificate(uuid.UUID(device_id)).current_certificate
    assert row is not None
    return row.pem


def in_window(device_id: str) -> dt.datetime:
    row = Device.objects.get_with_current_certificate(uuid.UUID(device_id)).current_certificate
    assert row is not None
    return renewal_opens_at(row.not_before, row.not_after) + dt.timedelta(hours=1)


def refusals() -> list[str]:
    return [event.detail["code"] for event in AuditEvent.objects.filter(action=AuditAction.RENEWAL_REFUSED)]


class TestWho:
    def test_no_certificate_is_401_with_a_challenge(self, front: None) -> None:
        answer = reenroll(None, csr_der(ec.generate_private_key(ec.SECP256R1())))
        assert answer.status_code == 401
        assert answer["WWW-Authenticate"].startswith("Certificate ")
        assert answer.json()["error"]["code"] == "client_certificate_required"
        assert refusals() == ["client_certificate_required"]

    def test_headers_without_the_proxy_secret_are_no_certificate(self, device: Any) -> None:
        answer_json, key = device
        pem = certificate_pem(answer_json["id"])
        for secret in ("", "wrong-" + SECRET):
            answer = reenroll(None, csr_der(key), **front_headers(pem, secret))
            assert answer.status_code == 401 and "WWW-Authenticate" in answer

    def test_a_certificate_the_portal_did_not_record_for_a_device_is_401(self, front: None) -> None:
        stray = issue_certificate("not-a-device", key_type=KeyType.EC_P256).record  # no device
        answer = reenroll(stray.pem, csr_der(ec.generate_private_key(ec.SECP256R1())))
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "certificate_unknown"
        assert "WWW-Authenticate" in answer

    def test_a_csr_under_another_media_type_is_415(self, device: Any) -> None:
        """RFC 7030 4.2.1: after the certificate, the body must be application/pkcs10."""
        answer_json, key = device
        answer = reenroll(certificate_pem(answer_json["id"]), csr_der(key), CONTENT_TYPE="application/json")
        assert answer.status_code == 415, answer.content
        assert answer.json()["error"]["code"] == "unsupported_media_type"

    def test_a_revoked_certificate_is_refused(self, device: Any, operator_api: Any) -> None:
        answer_json, key = device
        pem = certificate_pem(answer_json["id"])
        assert operator_api.post(f"/revoke/{answer_json['id']}", {}, format="json").status_code == 200
        with time_machine.travel(in_window(answer_json["id"])):
            answer = reenroll(pem, csr_der(key))
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "certificate_not_current"
        assert refusals() == ["certificate_not_current"]


class TestPolicy:
    def test_before_the_window_is_403_until_an_operator_allows_it(
        self, device: Any, operator_api: Any, tmp_path: Path, ca: CertificateAuthority
    ) -> None:
        answer_json, _ = device
        device_id = answer_json["id"]
        old_pem = certificate_pem(device_id)
        new_key = ec.generate_private_key(ec.SECP256R1())
        early = reenroll(old_pem, csr_der(new_key))
        assert early.status_code == 403
        error = early.json()["error"]
        assert error["code"] == "renewal_not_due"
        assert dt.datetime.fromisoformat(error["renewal_opens_at"]) == in_window(device_id) - dt.timedelta(
            hours=1
        )
        marked = operator_api.post(f"/api/v1/devices/{device_id}/request-renewal/")
        assert marked.status_code == 200 and marked.json()["renewal_requested_at"]

        renewed = issued_from(reenroll(old_pem, csr_der(new_key, common_name="someone-else")))
        # The CA names the device: the CSR's subject is ignored, the key is the CSR's.
        assert renewed.subject == x509.load_pem_x509_certificate(old_pem.encode()).subject
        assert renewed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device_id
        assert renewed.public_key() == new_key.public_key()
        assert_signed_by(renewed, ca.certificate)
        path = tmp_path / "renewed.pem"
        path.write_bytes(renewed.public_bytes(serialization.Encoding.PEM))
        lint = lint_certificate_file(path)
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr

        status = operator_api.get(f"/device/{device_id}").json()
        assert status["renewal_requested_at"] is None  # cleared by the renewal
        assert status["certificate"]["serial"] == serial_hex(renewed.serial_number)
        assert [rule["filter"] for rule in status["topics"]] == [f"devices/{device_id}/#"]
        old = Certificate.objects.get(
            serial=serial_hex(x509.load_pem_x509_certificate(old_pem.encode()).serial_number)
        )
        assert old.status == CertificateStatus.ACTIVE and old.superseded_at is not None
        event = AuditEvent.objects.get(action=AuditAction.DEVICE_RENEWED)
        assert event.detail["previous_serial"] == old.serial and str(event.device_id) == device_id

    def test_inside_the_window_with_retry_during_the_grace_then_not(self, device: Any, settings: Any) -> None:
        answer_json, _ = device
        device_id = answer_json["id"]
        old_pem = certificate_pem(device_id)
        when = in_window(device_id)
        with time_machine.travel(when, tick=False):
            assert renewal_due_devices() == [Device.objects.get(pk=device_id).pk]
            first = issued_from(reenroll(old_pem, csr_der(ec.generate_private_key(ec.SECP256R1()))))
            assert renewal_due_devices() == []
        # The answer was lost: the device retries with its old certificate inside the grace.
        with time_machine.travel(when + dt.timedelta(hours=23), tick=False):
            second = issued_from(reenroll(old_pem, csr_der(ec.generate_private_key(ec.SECP256R1()))))
            assert second.serial_number != first.serial_number
            lost = Certificate.objects.get(serial=serial_hex(first.serial_number))
            assert lost.superseded_at is not None  # replaced by the retry's certificate
            # Not yet past the grace: nothing to revoke.
            assert revoke_superseded_certificates() == 0
        with time_machine.travel(when + dt.timedelta(hours=25), tick=False):
            late = reenroll(old_pem, csr_der(ec.generate_private_key(ec.SECP256R1())))
            assert late.status_code == 403 and late.json()["error"]["code"] == "certificate_not_current"
            # The scheduled job: the old certificate past its grace, and the lost one at +23 h + 24 h.
            assert revoke_superseded_certificates() == 1
        old = Certificate.objects.get(
            serial=serial_hex(x509.load_pem_x509_certificate(old_pem.encode()).serial_number)
        )
        assert old.status == CertificateStatus.REVOKED and old.revocation_reason == "superseded"
        crl = x509.load_pem_x509_crl((Path(settings.CA_ROOT_PATH) / "crl.pem").read_bytes())
        assert_crl_contains(crl, [old.serial_number])
        current = Device.objects.get_with_current_certificate(device_id).current_certificate
        assert current is not None and current.serial == serial_hex(second.serial_number)
        assert current.status == CertificateStatus.ACTIVE

    def test_no_grace_revokes_at_once_and_the_command_runs_the_job(self, device: Any, settings: Any) -> None:
        answer_json, _ = device
        old_pem = certificate_pem(answer_json["id"])
        with time_machine.travel(in_window(answer_json["id"])):
            settings.RENEWAL_GRACE_HOURS = 0
            issued_from(reenroll(old_pem, csr_der(ec.generate_private_key(ec.SECP256R1()))))
        old = Certificate.objects.get(pem=old_pem)
        assert old.status == CertificateStatus.REVOKED and old.revocation_reason == "superseded"
        call_command("revoke_superseded")  # nothing left: runs and revokes nothing

    def test_a_csr_the_policy_refuses_is_400_with_the_portals_code(self, device: Any) -> None:
        answer_json, _ = device
        pem = certificate_pem(answer_json["id"])
        with time_machine.travel(in_window(answer_json["id"])):
            p384 = reenroll(pem, csr_der(ec.generate_private_key(ec.SECP384R1())))  # not on the allow-list
            assert p384.status_code == 400, p384.content
            assert p384.json()["error"]["code"] == "csr_key_not_allowed"
            garbage = Client().post(
                PATH, data=b"not base64!", content_type="application/pkcs10",
                HTTP_ACCEPT="application/json", secure=True, **front_headers(pem),
            )  # fmt: skip
            assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_csr"
            wrong_type = Client().post(
                PATH, data=b"x", content_type="text/plain", secure=True, **front_headers(pem)
            )
            assert wrong_type.status_code == 415
        assert Certificate.objects.filter(device_id=answer_json["id"]).count() == 1

    def test_request_renewal_of_a_revoked_device_is_409(self, device: Any, operator_api: Any) -> None:
        device_id = device[0]["id"]
        operator_api.post(f"/revoke/{device_id}", {}, format="json")
        answer = operator_api.post(f"/api/v1/devices/{device_id}/request-renewal/")
        assert answer.status_code == 409


class TestVisibility:
    def test_metrics_dashboard_and_alerts_name_devices_due(
        self, device: Any, settings: Any, client: Client, make_user: Any, mailoutbox: Any
    ) -> None:
        from devices.alerts import send_expiry_alerts
        from portal.dashboard import build
        from tests.support.metrics import TOKEN, scrape, value

        device_id = device[0]["id"]
        settings.METRICS_TOKEN = TOKEN
        assert value(scrape(client), "onboarding_devices_renewal_due") == 0
        operator = make_user("ops", "Operators")
        operator.email = "ops@example.com"
        operator.save()
        row = Device.objects.get_with_current_certificate(device_id).current_certificate
        assert row is not None
        with time_machine.travel(row.not_after - dt.timedelta(days=10)):
            assert value(scrape(client), "onboarding_devices_renewal_due") == 1
            board = build()
            assert board.renewal_due_total == 1 and [str(d.id) for d in board.renewal_due] == [device_id]
            assert send_expiry_alerts() == 1
        assert f"gateway ({device_id})" in mailoutbox[0].body


def test_bad_renewal_settings_stop_start_up(settings: Any) -> None:
    assert check_renewal_settings() == []
    settings.RENEWAL_WINDOW_PERCENT = 0
    settings.RENEWAL_GRACE_HOURS = -1
    assert [error.id for error in check_renewal_settings()] == ["devices.E001", "devices.E002"]
    settings.RENEWAL_WINDOW_PERCENT = 101
    settings.RENEWAL_GRACE_HOURS = 0
    assert [error.id for error in check_renewal_settings()] == ["devices.E001"]


class TestOperatorsAllowRenewal:
    """The flag is set through the portal's device page and the admin as through the API."""

    def test_portal_device_page(self, device: Any, make_user: Any, verified_login: Any) -> None:
        from tests.support.portal import signed_in

        device_id = device[0]["id"]
        operator = signed_in(make_user, verified_login, "Operators", "olga")
        page = operator.get(f"/portal/devices/{device_id}/").content.decode()
        assert "Let it renew now" in page and "opens " in page
        answer = operator.post(f"/portal/devices/{device_id}/request-renewal/")
        assert answer.status_code in (302, 303)
        assert Device.objects.get(pk=device_id).renewal_requested_at is not None
        assert "the device may renew now" in operator.get(f"/portal/devices/{device_id}/").content.decode()
        auditor = signed_in(make_user, verified_login, "Auditors", "audrey")
        assert auditor.post(f"/portal/devices/{device_id}/request-renewal/").status_code == 403
        event = AuditEvent.objects.get(action=AuditAction.RENEWAL_REQUESTED)
        assert event.actor_name == "olga"

    def test_admin_action(self, device: Any, make_user: Any, verified_login: Any) -> None:
        from tests.support.portal import signed_in

        device_id = device[0]["id"]
        staff = signed_in(make_user, verified_login, "Operators", "admin-operator", is_staff=True)
        answer = staff.post(
            "/admin/devices/device/", {"action": "request_renewal_selected", "_selected_action": [device_id]}
        )
        assert answer.status_code == 302, answer.content[:500]
        assert Device.objects.get(pk=device_id).renewal_requested_at is not None
