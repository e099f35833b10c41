"""Registration for EST delivery (API, portal form, portal bulk CSV, `onboard`), and simpleenroll
through Django: what it accepts, what it refuses and with which answer. The same enrolment through
nginx, curl, openssl and a real Mosquitto is in tests/test_est_enroll.py."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditAction, AuditEvent
from devices.models import Device, DeviceStatus, DownloadLink
from enrollment.models import EnrollmentCode, code_digest
from enrollment.services import create_enrollment_group
from pki.keystore import CertificateAuthority
from pki.models import Certificate
from portal.models import BulkJob
from tests.support.helpers import assert_signed_by, make_csr
from tests.support.manufacturer import make_ca, make_factory_certificate
from tests.support.portal import csv_upload, signed_in

SIMPLEENROLL = "/.well-known/est/simpleenroll"


def _register(api: APIClient, name: str = "est-sensor", **extra: Any) -> dict[str, Any]:
    answer = api.post("/api/v1/devices/", {"name": name, "delivery": "est", **extra}, format="json")
    assert answer.status_code == 201, answer.content
    data: dict[str, Any] = answer.json()
    return data


def _csr_body(key: Any | None = None, *, wrap: bool = True) -> bytes:
    """A CSR as an EST client sends it: base64 DER, in lines (RFC 7030 4.2.1)."""
    pem = make_csr(key or ec.generate_private_key(ec.SECP256R1()))
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    return base64.encodebytes(der) if wrap else base64.b64encode(der)


def _basic(device_id: str, code: str) -> str:
    return "Basic " + base64.b64encode(f"{device_id}:{code}".encode()).decode()


def _enroll(client: Client, body: bytes, **meta: str) -> Any:
    """POST to simpleenroll; `meta` as WSGI environ keys (HTTP_AUTHORIZATION=...)."""
    extra: dict[str, Any] = dict(meta)
    return client.post(SIMPLEENROLL, body, content_type="application/pkcs10", **extra)


def _certificate_of(answer: Any) -> x509.Certificate:
    assert answer["Content-Type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert answer["Content-Transfer-Encoding"] == "base64"
    (certificate,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer.content))
    return certificate


# --- Registration for EST delivery ---------------------------------------------------------


def test_the_api_registers_an_awaiting_device_with_a_code_shown_once(operator_api: APIClient) -> None:
    answer = _register(operator_api, hardware_id="EST-1", key_type="rsa3072")
    device = Device.objects.get(pk=answer["id"])
    assert device.status == DeviceStatus.AWAITING_ENROLLMENT == answer["status"] == "awaiting_enrollment"
    assert answer["certificate"] is None and answer["topics"] == []
    assert "download_url" not in answer and "bundle_password" not in answer
    assert answer["enrollment_code_expires_at"]
    # No key, no certificate, no bundle: the device brings its key when it enrols.
    assert not Certificate.objects.filter(device=device).exists()
    assert not DownloadLink.objects.filter(device=device).exists()
    registered = AuditEvent.objects.get(action=AuditAction.DEVICE_REGISTERED, device_id=device.id)
    assert registered.detail == {"delivery": "est"} and registered.actor is not None
    stored = EnrollmentCode.objects.get(device=device)
    assert stored.digest == code_digest(answer["enrollment_code"]) != answer["enrollment_code"]
    assert len(answer["enrollment_code"]) >= 22  # 128 bits or more
    shown = operator_api.get(f"/api/v1/devices/{device.id}/").json()
    assert shown["status"] == "awaiting_enrollment" and "enrollment_code" not in shown
    listed = operator_api.get("/api/v1/devices/", {"status": "awaiting_enrollment"}).json()
    assert [item["id"] for item in listed["results"]] == [answer["id"]]


def test_zip_stays_the_default(operator_api: APIClient) -> None:
    answer = operator_api.post("/api/v1/devices/", {"name": "zip", "key_type": "ec-p256"}, format="json")
    assert answer.status_code == 201 and answer.json()["download_url"]
    assert answer.json()["status"] == "active" and "enrollment_code" not in answer.json()
    assert (
        operator_api.post("/api/v1/devices/", {"name": "x", "delivery": "usb"}, format="json").status_code
        == 400
    )


def test_a_taken_hardware_id_is_409(operator_api: APIClient) -> None:
    _register(operator_api, hardware_id="EST-DUP")
    again = operator_api.post(
        "/api/v1/devices/", {"name": "b", "hardware_id": "EST-DUP", "delivery": "est"}, format="json"
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "hardware_id_exists"


def test_a_revoked_awaiting_device_cannot_enrol(operator_api: APIClient, client: Client) -> None:
    answer = _register(operator_api)
    assert operator_api.post(f"/api/v1/revoke/{answer['id']}", {}, format="json").status_code == 200
    refused = _enroll(client, _csr_body(), HTTP_AUTHORIZATION=_basic(answer["id"], answer["enrollment_code"]))
    assert refused.status_code == 401
    assert Device.objects.get(pk=answer["id"]).status == DeviceStatus.REVOKED


# --- simpleenroll with a code, through Django ----------------------------------------------


def test_a_code_enrols_the_device_once(
    operator_api: APIClient, ca: CertificateAuthority, client: Client
) -> None:
    answer = _register(operator_api)
    enrolled = _enroll(
        client, _csr_body(), HTTP_AUTHORIZATION=_basic(answer["id"], answer["enrollment_code"])
    )
    assert enrolled.status_code == 200, enrolled.content
    assert enrolled["Cache-Control"] == "no-store"
    certificate = _certificate_of(enrolled)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == answer["id"]
    assert_signed_by(certificate, ca.certificate)
    device = operator_api.get(f"/api/v1/devices/{answer['id']}/").json()
    assert device["status"] == "active" and device["certificate"]["key_type"] == "ec-p256"
    assert device["topics"]
    event = AuditEvent.objects.get(action=AuditAction.DEVICE_ENROLLED)
    assert event.detail["method"] == "enrollment_code"
    assert AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_CODE_REDEEMED).count() == 1
    # Once.
    replay = _enroll(client, _csr_body(), HTTP_AUTHORIZATION=_basic(answer["id"], answer["enrollment_code"]))
    assert replay.status_code == 401 and replay["WWW-Authenticate"] == 'Basic realm="est"'


def test_a_body_on_one_line_is_accepted_too(operator_api: APIClient, client: Client) -> None:
    answer = _register(operator_api)
    body = _csr_body(rsa.generate_private_key(65537, 2048), wrap=False)
    enrolled = _enroll(client, body, HTTP_AUTHORIZATION=_basic(answer["id"], answer["enrollment_code"]))
    assert enrolled.status_code == 200
    certificate = Device.objects.get(pk=answer["id"]).current_certificate
    assert certificate is not None and certificate.key_type == "rsa2048"


def test_without_credentials_the_client_is_challenged(ca: CertificateAuthority, client: Client) -> None:
    answer = _enroll(client, _csr_body(), HTTP_ACCEPT="application/json")
    assert answer.status_code == 401 and answer["WWW-Authenticate"] == 'Basic realm="est"'
    assert answer.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("authorization", ["Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()])
def test_malformed_basic_credentials_are_401(
    ca: CertificateAuthority, client: Client, authorization: str
) -> None:
    assert _enroll(client, _csr_body(), HTTP_AUTHORIZATION=authorization).status_code == 401


def test_a_wrong_code_is_401_and_counted(operator_api: APIClient, client: Client) -> None:
    answer = _register(operator_api)
    refused = _enroll(
        client,
        _csr_body(),
        HTTP_AUTHORIZATION=_basic(answer["id"], "not-the-code"),
        HTTP_ACCEPT="application/json",
    )
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "enrollment_code_invalid"
    assert EnrollmentCode.objects.get(device_id=answer["id"]).failed_attempts == 1


def test_a_zip_device_has_no_code(operator_api: APIClient, client: Client) -> None:
    zipped = operator_api.post(
        "/api/v1/devices/", {"name": "zip", "key_type": "ec-p256"}, format="json"
    ).json()
    assert (
        _enroll(client, _csr_body(), HTTP_AUTHORIZATION=_basic(zipped["id"], "anything")).status_code == 401
    )


def test_lockout_is_429_with_retry_after(operator_api: APIClient, client: Client, settings: Any) -> None:
    answer = _register(operator_api)
    for _ in range(settings.ENROLLMENT_CODE_MAX_FAILURES):
        _enroll(client, _csr_body(), HTTP_AUTHORIZATION=_basic(answer["id"], "guess"))
    locked = _enroll(client, _csr_body(), HTTP_AUTHORIZATION=_basic(answer["id"], answer["enrollment_code"]))
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b" \r\n", "invalid_csr"),
        (b"not base64 at all!", "invalid_csr"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n", "invalid_csr"),
        (base64.b64encode(b"\x30\x03\x02\x01\x00"), "invalid_csr"),
    ],
)
def test_a_bad_csr_is_400_and_spends_no_attempt(
    operator_api: APIClient, client: Client, body: bytes, code: str
) -> None:
    answer = _register(operator_api)
    refused = _enroll(
        client,
        body,
        HTTP_AUTHORIZATION=_basic(answer["id"], answer["enrollment_code"]),
        HTTP_ACCEPT="application/json",
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == code
    row = EnrollmentCode.objects.get(device_id=answer["id"])
    assert row.failed_attempts == 0 and row.used_at is None


def test_the_csr_policy_applies(operator_api: APIClient, client: Client) -> None:
    answer = _register(operator_api)
    refused = _enroll(
        client,
        _csr_body(ec.generate_private_key(ec.SECP384R1())),
        HTTP_AUTHORIZATION=_basic(answer["id"], answer["enrollment_code"]),
        HTTP_ACCEPT="application/json",
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"].startswith("csr_key")
    assert Device.objects.get(pk=answer["id"]).status == DeviceStatus.AWAITING_ENROLLMENT


def test_only_post_with_a_pkcs10_body(operator_api: APIClient, client: Client) -> None:
    answer = _register(operator_api)
    assert client.get(SIMPLEENROLL).status_code == 405
    wrong_type = client.post(
        SIMPLEENROLL,
        _csr_body(),
        content_type="application/json",
        HTTP_AUTHORIZATION=_basic(answer["id"], answer["enrollment_code"]),
    )
    assert wrong_type.status_code == 415


# --- Zero-touch through Django: the proxy's headers ----------------------------------------


def _factory_headers(certificate: x509.Certificate, secret: str | None, verdict: str) -> dict[str, str]:
    headers = {
        "HTTP_X_CLIENT_CERT": quote(certificate.public_bytes(serialization.Encoding.PEM).decode(), safe=""),
        "HTTP_X_CLIENT_VERIFY": verdict,
    }
    if secret is not None:
        headers["HTTP_X_PROXY_SECRET"] = secret
    return headers


def test_zero_touch_believes_the_certificate_only_from_the_proxy(
    ca: CertificateAuthority, client: Client, settings: Any
) -> None:
    settings.PROXY_SECRET = "p" * 40
    manufacturer = make_ca()
    create_enrollment_group(name="acme", ca_certificate=manufacturer.pem)
    factory = make_factory_certificate(manufacturer, "ACME-42")
    # The portal verifies the factory certificate itself: nginx's verdict (FAILED: it does not
    # know the manufacturer's CA) does not matter, its secret does.
    for secret in (None, "q" * 40):
        refused = _enroll(client, _csr_body(), **_factory_headers(factory, secret, "SUCCESS"))
        assert refused.status_code == 401
    enrolled = _enroll(
        client, _csr_body(), **_factory_headers(factory, settings.PROXY_SECRET, "FAILED:unable to get issuer")
    )
    assert enrolled.status_code == 200, enrolled.content
    device = Device.objects.get(hardware_id="ACME-42")
    assert device.status == DeviceStatus.ACTIVE and device.name == "acme ACME-42"
    assert _certificate_of(enrolled).subject.rfc4514_string() == f"CN={device.id}"
    # The same factory certificate again: the hardware id is taken.
    again = _enroll(client, _csr_body(), **_factory_headers(factory, settings.PROXY_SECRET, "SUCCESS"))
    assert again.status_code == 409


def test_basic_credentials_win_over_a_certificate(
    operator_api: APIClient, client: Client, settings: Any
) -> None:
    settings.PROXY_SECRET = "p" * 40
    answer = _register(operator_api)
    manufacturer = make_ca()
    factory = make_factory_certificate(manufacturer, "ACME-43")
    enrolled = _enroll(
        client,
        _csr_body(),
        HTTP_AUTHORIZATION=_basic(answer["id"], answer["enrollment_code"]),
        **_factory_headers(factory, settings.PROXY_SECRET, "FAILED:x"),
    )
    assert enrolled.status_code == 200
    assert not Device.objects.filter(hardware_id="ACME-43").exists()


# --- Portal form and bulk CSV --------------------------------------------------------------


@pytest.fixture
def operator(ca: Any, make_user: Any, verified_login: Any, settings: Any) -> Client:
    settings.PORTAL_BULK_RUN_INLINE = True
    return signed_in(make_user, verified_login, "Operators", "est-operator")


def test_the_portal_form_shows_the_code_once(operator: Client) -> None:
    page = operator.get("/portal/devices/register/")
    submission = page.context["submission"]
    answer = operator.post(
        "/portal/devices/register/",
        {"name": "form-est", "delivery": "est", "key_type": "rsa2048", "submission": submission},
    )
    assert answer.status_code == 303, answer.content
    shown = operator.get(answer["Location"]).content.decode()
    device = Device.objects.get(name="form-est")
    assert device.status == DeviceStatus.AWAITING_ENROLLMENT
    code = shown.split('data-testid="enrollment-code">')[1].split("<")[0]
    assert EnrollmentCode.objects.get(device=device).digest == code_digest(code)
    assert "Download link" not in shown
    assert code not in operator.get(answer["Location"]).content.decode()


def test_portal_bulk_lists_the_codes(operator: Client) -> None:
    data = "name,hardware_id,delivery,site\nline-1,F-1,est,Lyon\nline-2,F-2,,Lyon\n"
    assert operator.post("/portal/bulk/", {"file": csv_upload(data)}).status_code == 302
    job = BulkJob.objects.get()
    job_url = f"/portal/bulk/{job.pk}/"
    operator.post(f"{job_url}start")
    rows = {
        row["name"]: row
        for row in csv.DictReader(io.StringIO(operator.get(f"{job_url}results.csv").content.decode()))
    }
    est, zipped = rows["line-1"], rows["line-2"]
    assert (
        est["status"] == "awaiting_enrollment"
        and est["enrollment_code"]
        and est["enrollment_code_expires_at"]
    )
    assert not est["download_url"] and not est["bundle_password"]
    assert zipped["status"] == "active" and zipped["download_url"] and not zipped["enrollment_code"]
    assert Device.objects.get(hardware_id="F-1").metadata == {"site": "Lyon"}
    assert EnrollmentCode.objects.get(device__hardware_id="F-1").digest == code_digest(est["enrollment_code"])


def test_portal_bulk_refuses_an_unknown_delivery(db: Any) -> None:
    from portal import bulk

    checked = bulk.check_csv(b"name,delivery\nx,usb\n")
    assert [problem.message for problem in checked.problems] == ["Delivery 'usb' is not one of zip, est."]


# --- The onboard CLI -----------------------------------------------------------------------


def test_cli_reads_delivery_from_a_column_or_the_option(tmp_path: Path) -> None:
    from onboard_cli.bulk import read_rows
    from onboard_cli.client import CliError

    source = tmp_path / "in.csv"
    source.write_text("name,hardware_id,delivery\na,A,est\nb,B,\nc,C,zip\n")
    rows = read_rows(source)
    assert [row.body().get("delivery") for row in rows] == ["est", None, "zip"]
    rows = read_rows(source, default_delivery="est")
    assert [row.body().get("delivery") for row in rows] == ["est", "est", "zip"]
    assert "metadata" not in rows[0].body()
    source.write_text("name,delivery\na,usb\n")
    with pytest.raises(CliError, match="delivery 'usb'"):
        read_rows(source)


def test_cli_result_row_for_an_est_answer() -> None:
    from onboard_cli.bulk import Row, register_row

    class Client:
        def register(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
            assert body["delivery"] == "est"
            return {
                "id": "d1",
                "enrollment_code": "c0de",
                "enrollment_code_expires_at": "2030-01-01T00:00:00Z",
            }

    row = Row(line=2, name="a", hardware_id="A", key_type=None, csr=None, delivery="est")
    result = register_row(Client(), row)  # type: ignore[arg-type]
    assert result["enrollment_code"] == "c0de" and result["status"] == "registered"
    assert "download_url" not in result


@pytest.mark.django_db(transaction=True)
def test_onboard_register_and_bulk_register_with_delivery_est(
    portal: str, tmp_path: Path, capsys: Any
) -> None:
    from django.contrib.auth.models import User

    from accounts.services import create_api_token
    from onboard_cli.main import main

    user = User.objects.create_superuser("factory-line", password="a-long-test-password")
    login = ["--url", portal, "--token", create_api_token(user).value]
    assert main([*login, "--json", "register", "--name", "cli-est", "--delivery", "est"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "awaiting_enrollment" and answer["enrollment_code"]
    assert main([*login, "register", "--name", "cli-est-2", "--delivery", "est"]) == 0
    printed = capsys.readouterr().out
    assert "Enrol code" in printed and "awaiting_enrollment" in printed
    assert main([*login, "register", "--name", "x", "--delivery", "est", "--out", str(tmp_path / "z")]) == 2

    source = tmp_path / "line.csv"
    source.write_text("name,hardware_id\nl-1,L-1\nl-2,L-2\n")
    results = tmp_path / "results.csv"
    assert main([*login, "bulk-register", str(source), "--delivery", "est", "--out", str(results)]) == 0
    rows = list(csv.DictReader(results.open()))
    assert {row["status"] for row in rows} == {"registered"}
    for row in rows:
        assert EnrollmentCode.objects.get(device_id=row["device_id"]).digest == code_digest(
            row["enrollment_code"]
        )
        assert not row["download_url"]


def test_an_awaiting_device_has_its_pages_and_can_be_revoked_in_the_portal(operator: Client) -> None:
    from devices.registration import RegistrationRequest
    from enrollment.enroll import register_for_enrollment

    awaiting = register_for_enrollment(RegistrationRequest(name="waiting-one"))
    page = operator.get(f"/portal/devices/{awaiting.device.id}/")
    assert page.status_code == 200 and "Awaiting enrolment" in page.content.decode()
    assert "waiting-one" in operator.get("/portal/devices/?status=awaiting_enrollment").content.decode()
    assert operator.get("/portal/").status_code == 200
    revoked = operator.post(
        f"/portal/devices/{awaiting.device.id}/revoke/", {"reason": "cessationOfOperation", "confirm": "on"}
    )
    assert revoked.status_code == 302, revoked.content
    assert Device.objects.get(pk=awaiting.device.id).status == DeviceStatus.REVOKED
