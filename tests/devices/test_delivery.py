"""Credential delivery: the encrypted ZIP, its one-time expiring link, and what is left on disk."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pyzipper
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from devices import delivery
from devices.models import Device, DownloadAttempt, DownloadLink
from devices.registration import RegistrationRequest, register_device
from pki.keystore import CertificateAuthority, keystore
from pki.profiles import KeyType
from tests.support.api import link_path, register
from tests.support.helpers import make_csr, open_bundle, openssl_verify

PRIVATE_KEY_MARKERS = (b"BEGIN PRIVATE KEY", b"BEGIN RSA PRIVATE KEY", b"BEGIN EC PRIVATE KEY")


class TestBundle:
    def test_zip_opens_with_the_password_and_holds_working_credentials(
        self, operator_api: APIClient, settings: Any, tmp_path: Path
    ) -> None:
        settings.BROKER_PUBLIC_HOST = "mqtt.factory.example"
        settings.BROKER_PUBLIC_PORT = 8884
        answer = register(operator_api, name="press-12", key_type="rsa2048")
        files = open_bundle(operator_api, answer)
        assert set(files) == {"device.key", "device.crt", "ca.crt", "device.json", "README.txt"}

        assert files["device.key"].startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
        key = serialization.load_pem_private_key(files["device.key"], password=None)
        certificate = x509.load_pem_x509_certificate(files["device.crt"])
        assert key.public_key() == certificate.public_key()
        assert files["ca.crt"] == keystore().certificate_path.read_bytes()
        (tmp_path / "device.crt").write_bytes(files["device.crt"])
        (tmp_path / "ca.crt").write_bytes(files["ca.crt"])
        assert (
            openssl_verify(tmp_path / "ca.crt", tmp_path / "device.crt", "-purpose", "sslclient").returncode
            == 0
        )

        settings_file = json.loads(files["device.json"])
        assert settings_file["device_id"] == answer["id"]
        assert settings_file["name"] == "press-12"
        assert settings_file["broker"]["host"] == "mqtt.factory.example"
        assert settings_file["broker"]["port"] == 8884
        assert settings_file["broker"]["tls"]["private_key"] == "device.key"
        assert settings_file["topics"] == [{"filter": f"devices/{answer['id']}/#", "access": "readwrite"}]
        assert settings_file["certificate"]["serial"] == answer["certificate"]["serial"]
        assert (
            dt.datetime.fromisoformat(settings_file["certificate"]["not_after"])
            == certificate.not_valid_after_utc
        )

        readme = files["README.txt"].decode()
        assert (
            "mosquitto_pub -h mqtt.factory.example -p 8884 --cafile ca.crt --cert device.crt --key device.key"
            in (readme)
        )
        assert f"devices/{answer['id']}/telemetry" in readme and "paho.mqtt.client" in readme

    def test_zip_is_aes256_and_refuses_a_wrong_password(self, operator_api: APIClient) -> None:
        answer = register(operator_api)
        data = operator_api.get(link_path(answer)).content
        with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
            # WinZip AES: every entry encrypted, strength 3 = AES-256.
            assert all(info.is_encrypted and info.wz_aes_strength == 3 for info in archive.infolist())
            archive.setpassword(b"not-the-password")
            with pytest.raises(RuntimeError):
                archive.read("device.crt")

    def test_password_is_typeable_and_has_at_least_128_bits(self, operator_api: APIClient) -> None:
        passwords = {register(operator_api, name=f"d{index}")["bundle_password"] for index in range(5)}
        assert len(passwords) == 5
        for password in passwords:
            assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){7}", password), password
            assert len(password.replace("-", "")) * 5 >= 128  # base32: 5 bits a character

    def test_csr_bundle_has_no_key(self, operator_api: APIClient) -> None:
        csr = make_csr(ec.generate_private_key(ec.SECP256R1())).decode()
        answer = register(operator_api, csr=csr, key_type=None)
        files = open_bundle(operator_api, answer)
        assert set(files) == {"device.crt", "ca.crt", "device.json", "README.txt"}
        assert "private_key" not in json.loads(files["device.json"])["broker"]["tls"]

    def test_storage_layout(self, operator_api: APIClient) -> None:
        answer = register(operator_api)
        directory = Path(settings.CA_ROOT_PATH) / "devices" / answer["id"]
        assert sorted(path.name for path in directory.iterdir()) == ["creds.zip", "device.crt"]
        assert (directory / "creds.zip").stat().st_mode & 0o777 == 0o600
        assert (directory / "device.crt").read_text() == answer["certificate_pem"]


class TestLink:
    def test_token_is_long_and_stored_only_as_digest(self, operator_api: APIClient) -> None:
        answer = register(operator_api)
        token = link_path(answer).rsplit("/", 1)[1]
        assert len(token) >= 43  # 256 bits in URL-safe base64
        link = DownloadLink.objects.get()
        assert link.token_digest == hashlib.sha256(token.encode()).hexdigest()
        assert answer["download_url"] == f"{settings.PORTAL_URL}/download/{token}"

    def test_second_download_is_refused_and_the_file_is_gone(self, operator_api: APIClient) -> None:
        answer = register(operator_api)
        first = operator_api.get(link_path(answer))
        assert first.status_code == 200
        assert first["Cache-Control"] == "no-store" and first["Referrer-Policy"] == "no-referrer"
        assert not delivery.bundle_path(answer["id"]).exists()
        second = operator_api.get(link_path(answer))
        assert second.status_code == 410
        assert second.json()["error"]["code"] == "link_used"
        assert second["Cache-Control"] == "no-store" and second["Referrer-Policy"] == "no-referrer"

    def test_browsers_get_a_page_that_says_what_to_do(self, operator_api: APIClient) -> None:
        answer = register(operator_api)
        operator_api.get(link_path(answer))
        page = APIClient().get(link_path(answer), HTTP_ACCEPT="text/html,application/xhtml+xml")
        assert page.status_code == 410
        assert page["Content-Type"].startswith("text/html")
        text = page.content.decode()
        assert "already used" in text and "Ask an operator for a new bundle" in text

    def test_expired_link(self, operator_api: APIClient, settings: Any) -> None:
        answer = register(operator_api)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=settings.DOWNLOAD_EXPIRY_MINUTES, seconds=1)
        with time_machine.travel(later):
            response = APIClient().get(link_path(answer))
        assert response.status_code == 410
        assert response.json()["error"]["code"] == "link_expired"
        assert not delivery.bundle_path(answer["id"]).exists()

    def test_unknown_token(self, ca: CertificateAuthority) -> None:
        response = APIClient().get("/download/" + "A" * 43)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_link"

    def test_a_new_bundle_withdraws_the_old_link(self, operator_api: APIClient) -> None:
        csr = make_csr(ec.generate_private_key(ec.SECP256R1())).decode()
        answer = register(operator_api, csr=csr, key_type=None)
        fresh = operator_api.post(f"/api/v1/devices/{answer['id']}/bundle", format="json")
        assert fresh.status_code == 201
        old = operator_api.get(link_path(answer))
        assert old.status_code == 410 and old.json()["error"]["code"] == "link_withdrawn"
        files = open_bundle(operator_api, fresh.json())
        # A device with its own key keeps its certificate: same one, new bundle and password.
        assert files["device.crt"].decode() == answer["certificate_pem"]
        assert fresh.json()["bundle_password"] != answer["bundle_password"]

    def test_new_bundle_for_a_server_key_rotates(self, operator_api: APIClient) -> None:
        answer = register(operator_api)
        fresh = operator_api.post(f"/api/v1/devices/{answer['id']}/bundle", format="json").json()
        files = open_bundle(operator_api, fresh)
        certificate = x509.load_pem_x509_certificate(files["device.crt"])
        assert format(certificate.serial_number, "X") not in answer["certificate"]["serial"]
        old = Device.objects.get().certificates.get(serial=answer["certificate"]["serial"])
        assert old.revocation_reason == "superseded"

    def test_altered_bundle_is_never_served(self, operator_api: APIClient) -> None:
        answer = register(operator_api)
        path = delivery.bundle_path(answer["id"])
        path.write_bytes(path.read_bytes() + b"tampered")
        response = operator_api.get(link_path(answer))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "bundle_missing"

    def test_every_attempt_is_recorded(self, operator_api: APIClient) -> None:
        answer = register(operator_api)
        agent: dict[str, Any] = {"HTTP_USER_AGENT": "factory-flasher/2.1", "REMOTE_ADDR": "192.0.2.7"}
        operator_api.get(link_path(answer), **agent)
        operator_api.get(link_path(answer), **agent)
        operator_api.get("/download/unknown-token-value-0000000000000000000", **agent)
        attempts = list(DownloadAttempt.objects.order_by("at", "pk"))
        assert [attempt.outcome for attempt in attempts] == ["success", "reused", "unknown"]
        assert all(attempt.address == "192.0.2.7" for attempt in attempts)
        assert all(attempt.user_agent == "factory-flasher/2.1" for attempt in attempts)
        assert str(attempts[0].device_id) == answer["id"] and attempts[2].device_id is None

    def test_cleanup_removes_expired_bundles(self, operator_api: APIClient, settings: Any) -> None:
        answer = register(operator_api)
        assert delivery.discard_expired_bundles() == 0
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=settings.DOWNLOAD_EXPIRY_MINUTES + 1)
        assert delivery.discard_expired_bundles(now=later) == 1
        assert not delivery.bundle_path(answer["id"]).exists()


@pytest.mark.django_db(transaction=True)
def test_simultaneous_downloads_give_one_zip(live_server: Any, session_ca_root: Path, settings: Any) -> None:
    settings.CA_ROOT_PATH = session_ca_root
    from pki.keystore import forget_loaded_ca

    forget_loaded_ca()
    tokens = []
    for index in range(8):
        registration = register_device(RegistrationRequest(name=f"race-{index}", key_type=KeyType.EC_P256))
        tokens.append(registration.bundle.token)

    def fetch(token: str, barrier: threading.Barrier, results: list[int]) -> None:
        barrier.wait()
        try:
            url = f"{live_server.url}/download/{token}"
            with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our own http URL
                results.append(response.status)
        except urllib.error.HTTPError as error:
            results.append(error.code)

    for token in tokens:
        results: list[int] = []
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=fetch, args=(token, barrier, results)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(results) == [200, 410], results
    forget_loaded_ca()


def test_no_private_key_or_password_rests_in_plaintext(operator_api: APIClient, settings: Any) -> None:
    passwords = [
        register(operator_api, name=f"scan-{index}", key_type="rsa2048")["bundle_password"]
        for index in range(3)
    ]
    csr = make_csr(ec.generate_private_key(ec.SECP256R1())).decode()
    passwords.append(register(operator_api, name="scan-csr", csr=csr, key_type=None)["bundle_password"])
    needles = [*PRIVATE_KEY_MARKERS, *(password.encode() for password in passwords),
               *(password.replace("-", "").encode() for password in passwords)]  # fmt: skip

    files = [*Path(settings.DATA_DIR).rglob("*"), *Path(settings.CA_ROOT_PATH).rglob("*")]
    assert any(path.name == "creds.zip" for path in files)
    for path in files:
        if path.is_file() and path.name != "ca.key":
            content = path.read_bytes()
            assert not any(needle in content for needle in needles), path
    assert b"ENCRYPTED PRIVATE KEY" in keystore().key_path.read_bytes()

    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from introspection
            for row in cursor.fetchall():
                text = repr(row).encode()
                assert not any(needle in text for needle in needles), table


def test_auditors_see_download_attempts_in_the_admin(
    operator_api: APIClient, make_user: Any, verified_login: Any
) -> None:
    from django.test import Client

    answer = register(operator_api)
    operator_api.get(link_path(answer), HTTP_USER_AGENT="flasher/1")
    auditor = make_user("auditor-1", "Auditors")
    auditor.is_staff = True
    auditor.save()
    browser = verified_login(Client(), auditor)
    page = browser.get("/admin/devices/downloadattempt/")
    assert page.status_code == 200
    assert "flasher/1" in page.content.decode()
    assert browser.post("/admin/devices/downloadattempt/1/delete/").status_code in {403, 302}
    assert DownloadAttempt.objects.count() == 1


def test_cleanup_command(operator_api: APIClient) -> None:
    from io import StringIO

    from django.core.management import call_command

    register(operator_api)
    out = StringIO()
    call_command("cleanup_bundles", stdout=out)
    assert out.getvalue().strip() == "Deleted 0 bundle(s) no link can serve any more."


def test_head_does_not_use_up_the_link(operator_api: APIClient) -> None:
    answer = register(operator_api)
    head = APIClient().head(link_path(answer))
    assert head.status_code == 405 and "HEAD" not in head["Allow"]
    assert open_bundle(operator_api, answer)["device.crt"]


def test_revoking_a_device_withdraws_its_open_link(
    operator_api: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    answer = register(operator_api)
    with django_capture_on_commit_callbacks(execute=True):  # the file goes once the revocation commits
        operator_api.post(f"/revoke/{answer['id']}", {"reason": "keyCompromise"}, format="json")
    response = APIClient().get(link_path(answer))
    assert response.status_code == 410
    # Its own code (issue #21, item 6): "a newer bundle replaced this one" was not true.
    assert response.json()["error"]["code"] == "device_revoked"
    assert "The device was revoked" in response.json()["error"]["message"]
    assert not delivery.bundle_path(answer["id"]).exists()
