"""Renewal with real parts: Debian's nginx (proxy_config) in front of gunicorn, curl and openssl as
the device, a real Mosquitto started with the product's configuration and paho-mqtt as the
device's MQTT client, and the `onboard device renew` client.

The device is registered the normal way (API with its own CSR) and is not inside its renewal
window (RENEWAL_WINDOW_PERCENT 33, certificates of 365 days): the first renewal is refused as not
due, an operator allows it, and it goes through. The renewal window itself (by time) is tested in
tests/est/test_est_renewal.py with time-machine, which cannot reach into gunicorn.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings as django_settings
from django.core.management import call_command

from onboard_cli.main import main as onboard
from pki.keystore import CertificateAuthority
from pki.models import Certificate, CertificateStatus
from pki.profiles import serial_hex
from tests.support.est_front import Front, tls_front
from tests.support.helpers import lint_certificate_file, openssl_verify
from tests.support.mosquitto import (
    ACCEPTED,
    NOT_AUTHORIZED,
    Broker,
    Credentials,
    DeviceClient,
    credentials_from_answer,
)

PATH = "/.well-known/est/simplereenroll"


@pytest.fixture
def front(ca: CertificateAuthority, settings: Any, tmp_path: Path) -> Iterator[Front]:
    """nginx from `proxy_config` in front of the portal under gunicorn, on the test database, with
    the broker settings the test has (ask for `mosquitto` or `broker_files` before this)."""
    with tls_front(
        ca,
        settings,
        tmp_path,
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
        BROKER_BACKEND=settings.BROKER_BACKEND,
        MOSQUITTO_PID_FILE=str(getattr(settings, "MOSQUITTO_PID_FILE", "") or ""),
        BROKER_CATCH_UP_AT_START="false",
    ) as running:
        yield running


def shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60
    )


def openssl_key_and_csr(directory: Path, stem: str) -> None:
    """STEM.key (EC P-256, made by openssl on the 'device') and STEM.csr (PEM) and STEM.b64 (the
    DER request base64-encoded, EST's body)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr = directory / f"{stem}.key", directory / f"{stem}.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=gateway", "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True,
    )  # fmt: skip
    der = subprocess.run(
        ["openssl", "req", "-in", str(csr), "-outform", "DER"], check=True, capture_output=True
    ).stdout
    (directory / f"{stem}.b64").write_bytes(base64.encodebytes(der))


def register_with_csr(operator_api: Any, tmp_path: Path) -> Credentials:
    """The normal way: the API with the device's own CSR; the bundle downloaded and unpacked."""
    device_dir = tmp_path / "device"
    openssl_key_and_csr(device_dir, "first")
    answer = operator_api.post(
        "/register", {"name": "gateway", "csr": (device_dir / "first.csr").read_text()}, format="json"
    )
    assert answer.status_code == 201, answer.content
    credentials = credentials_from_answer(operator_api, answer.json(), device_dir)
    (device_dir / "first.key").rename(credentials.key)
    return credentials


def curl_reenroll(
    front: Front, certificate: Path, key: Path, body: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return shell(
        f"curl -sS --fail-with-body --cacert {front.ca_file} --cert {certificate} --key {key} "
        f"-H 'Content-Type: application/pkcs10' {' '.join(extra)} --data-binary @{body} {front.https}{PATH}"
    )


def wait_until_refused(broker: Broker, credentials: Credentials, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        client = DeviceClient(broker, credentials)
        if not client.connect(timeout=3):
            return True
        client.close()
        time.sleep(0.3)
    return False


def connects_and_publishes(broker: Broker, credentials: Credentials) -> None:
    client = DeviceClient(broker, credentials)
    assert client.connect(), broker.log()[-2000:]
    try:
        assert client.publish(f"devices/{credentials.device_id}/telemetry") in ACCEPTED
        assert client.publish("devices/someone-else/telemetry") == NOT_AUTHORIZED
    finally:
        client.close()


# gunicorn shares the test database: committed rows only.
@pytest.mark.django_db(transaction=True)
def test_renewal_through_nginx_with_curl_openssl_and_mosquitto(
    mosquitto: Broker, front: Front, operator_api: Any, settings: Any, tmp_path: Path
) -> None:
    old = register_with_csr(operator_api, tmp_path)
    connects_and_publishes(mosquitto, old)
    openssl_key_and_csr(old.directory, "next")

    early = curl_reenroll(
        front, old.certificate, old.key, old.directory / "next.b64", "-H 'Accept: application/json'"
    )
    assert early.returncode != 0 and '"renewal_not_due"' in early.stdout, early
    assert operator_api.post(f"/api/v1/devices/{old.device_id}/request-renewal/").status_code == 200

    new_dir = tmp_path / "renewed"
    new_dir.mkdir()
    renewed = shell(
        f"curl -sS --fail --cacert {front.ca_file} --cert {old.certificate} --key {old.key} "
        f"-H 'Content-Type: application/pkcs10' --data-binary @{old.directory / 'next.b64'} "
        f"{front.https}{PATH} | base64 -d | openssl pkcs7 -inform DER -print_certs"
    )
    assert renewed.returncode == 0, renewed.stderr
    (certificate,) = x509.load_pem_x509_certificates(
        renewed.stdout.encode()
    )  # after openssl's subject= lines
    (new_dir / "device.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (old.directory / "next.key").rename(new_dir / "device.key")
    (new_dir / "ca.crt").write_bytes(old.ca.read_bytes())
    new = Credentials(device_id=old.device_id, directory=new_dir)
    assert certificate.subject == x509.load_pem_x509_certificate(old.certificate.read_bytes()).subject
    lint = lint_certificate_file(new.certificate)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr

    # The new certificate has the device's topics; the old one still works during the grace.
    connects_and_publishes(mosquitto, new)
    connects_and_publishes(mosquitto, old)

    # The grace is over: the scheduled job revokes the old one, the broker refuses it.
    settings.RENEWAL_GRACE_HOURS = 0
    call_command("revoke_superseded")
    assert wait_until_refused(mosquitto, old), mosquitto.log()[-2000:]
    connects_and_publishes(mosquitto, new)
    crl = Path(django_settings.CA_ROOT_PATH) / "crl.pem"
    verdict = openssl_verify(old.ca, old.certificate, "-crl_check", "-CRLfile", crl)
    assert verdict.returncode != 0 and "error 23" in verdict.stdout + verdict.stderr, verdict
    assert openssl_verify(new.ca, new.certificate, "-crl_check", "-CRLfile", crl).returncode == 0
    row = Certificate.objects.get(
        serial=serial_hex(x509.load_pem_x509_certificate(old.certificate.read_bytes()).serial_number)
    )
    assert row.status == CertificateStatus.REVOKED and row.revocation_reason == "superseded"

    # A revoked certificate cannot renew (nginx does not check the CRL; the portal's record does).
    refused = curl_reenroll(
        front, old.certificate, old.key, old.directory / "next.b64", "-H 'Accept: application/json'"
    )
    assert refused.returncode != 0 and '"certificate_not_current"' in refused.stdout, refused


@pytest.mark.django_db(transaction=True)
def test_strangers_and_forged_headers_are_refused(
    broker_files: None, front: Front, operator_api: Any, tmp_path: Path
) -> None:
    device = register_with_csr(operator_api, tmp_path)
    openssl_key_and_csr(device.directory, "next")
    body = device.directory / "next.b64"

    # No client certificate: 401 with a challenge.
    bare = shell(f"curl -sS -i --cacert {front.ca_file} -H 'Content-Type: application/pkcs10' "
                 f"--data-binary @{body} {front.https}{PATH}")  # fmt: skip
    assert bare.stdout.startswith("HTTP/1.1 401") and "www-authenticate: certificate" in bare.stdout.lower()

    # A certificate from another CA: nginx passes it on (optional_no_ca, for zero-touch enrolment)
    # with its verdict FAILED, and the portal does not take it for one of its own: 401.
    stranger = tmp_path / "stranger"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", f"/CN={device.device_id}", "-days", "30", "-keyout", f"{stranger}.key",
         "-out", f"{stranger}.crt"],
        check=True, capture_output=True,
    )  # fmt: skip
    other = shell(f"curl -sS -o /dev/null -w '%{{http_code}}' --cacert {front.ca_file} --cert {stranger}.crt "
                  f"--key {stranger}.key -H 'Content-Type: application/pkcs10' --data-binary @{body} "
                  f"{front.https}{PATH}")  # fmt: skip
    assert other.stdout == "401", other

    # The device's real certificate in forged headers straight to gunicorn: not believed.
    headers = {
        "X-Client-Cert": quote(device.certificate.read_text(), safe=""),
        "X-Client-Verify": "SUCCESS",
        "Content-Type": "application/pkcs10",
        "X-Forwarded-Proto": "https",
    }
    for secret in (None, "", "guessed-" + "x" * 32):
        sent = headers if secret is None else {**headers, "X-Proxy-Secret": secret}
        answer = httpx.post(f"{front.direct}{PATH}", headers=sent, content=body.read_bytes())
        assert answer.status_code == 401, (secret, answer.status_code, answer.text)
        assert "WWW-Authenticate" in answer.headers
    assert Certificate.objects.filter(device_id=device.device_id).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mosquitto", ["mosquitto_acl"], indirect=True)
def test_onboard_device_renew_through_nginx(
    mosquitto: Broker, front: Front, operator_api: Any, tmp_path: Path, capsys: Any
) -> None:
    device = register_with_csr(operator_api, tmp_path)
    original_key = device.key.read_bytes()
    original_certificate = device.certificate.read_bytes()
    command = ["device", "renew", "--cert", str(device.certificate), "--key", str(device.key),
               "--ca", str(device.ca), "--url", front.https]  # fmt: skip

    # Not in the window: --renew-if-due does nothing, successfully (a cron job's run).
    assert onboard([*command, "--renew-if-due"]) == 0
    assert "Not due" in capsys.readouterr().out
    assert device.certificate.read_bytes() == original_certificate
    # Asked anyway: the portal's refusal, and the files untouched.
    assert onboard(command) == 1
    assert "renewal_not_due" in capsys.readouterr().err
    assert device.key.read_bytes() == original_key

    assert operator_api.post(f"/api/v1/devices/{device.device_id}/request-renewal/").status_code == 200
    assert onboard(command) == 0, capsys.readouterr()
    assert "Renewed" in capsys.readouterr().out
    assert device.key.read_bytes() != original_key and (device.key.stat().st_mode & 0o777) == 0o600
    assert Path(f"{device.key}.bak").read_bytes() == original_key
    assert Path(f"{device.certificate}.bak").read_bytes() == original_certificate
    connects_and_publishes(mosquitto, device)  # the new pair, written in place
