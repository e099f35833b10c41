"""EST simpleenroll (RFC 7030 4.2.1) end to end: Debian's nginx from proxy_config in front of a real
gunicorn, the device side done by `openssl` and `curl` alone, the enrolled certificate used on a
real Mosquitto started with the product's configuration, and every certificate through pkilint.

Both ways in: a device registered with `"delivery": "est"` and its one-time code (HTTP Basic), and
zero-touch with a factory certificate from a manufacturer CA made by `openssl` in the test.
"""

from __future__ import annotations

import datetime as dt
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from django.core.management import call_command

from audit.models import AuditAction, AuditEvent
from devices.models import Device, DeviceStatus
from enrollment.models import EnrollmentGroup
from enrollment.services import create_enrollment_group, update_enrollment_group
from pki.keystore import CertificateAuthority
from pki.profiles import serial_hex
from tests.support.helpers import assert_signed_by, free_port, lint_certificate_file, superuser_token
from tests.support.mosquitto import (
    ACCEPTED,
    NOT_AUTHORIZED,
    Broker,
    Credentials,
    DeviceClient,
    configured_broker,
    stop_mosquitto,
)
from tests.support.workers import gunicorn_portal, stop_process_group, worker_environment

NGINX = "/usr/sbin/nginx"
SIMPLEENROLL = "/.well-known/est/simpleenroll"

# gunicorn's processes share the test database: committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class Front:
    https: str  # through nginx
    direct: str  # straight to gunicorn
    ca_file: Path
    secret: str


@pytest.fixture
def broker(ca: CertificateAuthority, settings: Any, tmp_path: Path) -> Iterator[Broker]:
    started = configured_broker(settings, tmp_path)
    try:
        yield started
    finally:
        stop_mosquitto(started)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"nginx did not start: {log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.05)


@pytest.fixture
def front(ca: CertificateAuthority, broker: Broker, settings: Any, tmp_path: Path) -> Iterator[Front]:
    """nginx (proxy_config) in front of gunicorn; the portal signs in the request (no task queue)
    and keeps the test's broker in step."""
    secret = secrets.token_urlsafe(32)
    settings.PROXY_SECRET = secret
    environment = worker_environment(
        broker_url="",
        DATA_DIR=str(tmp_path / "data"),
        ALLOWED_HOSTS="127.0.0.1",
        PROXY_SECRET=secret,
        TRUSTED_PROXY_COUNT="1",
        BROKER_BACKEND=settings.BROKER_BACKEND,
        MOSQUITTO_PID_FILE=settings.MOSQUITTO_PID_FILE,
        BROKER_PUBLIC_HOST="127.0.0.1",
        BROKER_PUBLIC_PORT=str(broker.port),
        BROKER_PROBE_HOST="127.0.0.1",
        BROKER_PROBE_PORT=str(broker.port),
    )
    with gunicorn_portal(environment, tmp_path / "gunicorn.log") as url:
        port = free_port()
        out = tmp_path / "proxy"
        call_command("proxy_config", "--out", str(out), "--listen", f"127.0.0.1:{port}",
                     "--upstream", url.removeprefix("http://"), "--hostname", "127.0.0.1")  # fmt: skip
        (tmp_path / "ca.crt").write_bytes(ca.certificate_pem)
        log = tmp_path / "nginx.out"
        with log.open("wb") as output:
            nginx = subprocess.Popen(
                [NGINX, "-c", str(out / "nginx.conf"), "-g", "daemon off;"],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_port(port, nginx, log)
            yield Front(f"https://127.0.0.1:{port}", url, tmp_path / "ca.crt", secret)
        finally:
            stop_process_group(nginx)


@pytest.fixture
def api_token(transactional_db: None) -> str:
    return superuser_token("est-operator")


def _tls(front: Front) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(front.ca_file))


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _new_csr(directory: Path) -> Path:
    """What a device without Python does: a key and a CSR with `openssl`, the CSR as base64 DER."""
    directory.mkdir(parents=True, exist_ok=True)
    made = _shell(
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout device.key "
        "-subj '/CN=whatever the device likes' -outform DER | base64 > csr.b64",
        directory,
    )
    assert made.returncode == 0, made.stderr
    return directory / "csr.b64"


def _enroll(front: Front, directory: Path, *auth: str) -> tuple[int, str]:
    """POST the CSR with curl; (HTTP status, body). On 200 the certificate is read back with
    `base64 -d | openssl pkcs7 -print_certs` into device.crt."""
    answer = _shell(
        f"curl -sS -o answer.b64 -w '%{{http_code}}' --cacert {front.ca_file} {' '.join(auth)} "
        f"--data-binary @csr.b64 -H 'Content-Type: application/pkcs10' {front.https}{SIMPLEENROLL}",
        directory,
    )
    assert answer.returncode == 0, answer.stderr
    status = int(answer.stdout)
    body = (directory / "answer.b64").read_text()
    if status == 200:
        printed = _shell(
            "base64 -d answer.b64 | openssl pkcs7 -inform DER -print_certs -out device.crt", directory
        )
        assert printed.returncode == 0, printed.stderr
    return status, body


def _register_for_est(front: Front, token: str, name: str, hardware_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "delivery": "est"}
    if hardware_id:
        body["hardware_id"] = hardware_id
    answer = httpx.post(
        f"{front.https}/api/v1/devices/",
        json=body,
        headers={"Authorization": f"Token {token}"},
        verify=_tls(front),
    )
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()
    return data


def _enrolled_certificate(directory: Path, ca: CertificateAuthority, device_id: str) -> x509.Certificate:
    certificate = x509.load_pem_x509_certificate((directory / "device.crt").read_bytes())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device_id
    assert_signed_by(certificate, ca.certificate)
    # -print_certs writes subject= and issuer= lines before the PEM: lint the certificate alone.
    (directory / "enrolled.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    linted = lint_certificate_file(directory / "enrolled.pem")
    assert linted.returncode == 0 and not linted.stdout.strip(), linted.stdout + linted.stderr
    return certificate


def _uses_its_topics(broker: Broker, directory: Path, device_id: str) -> None:
    (directory / "ca.crt").write_bytes(broker.ca_file.read_bytes())
    client = DeviceClient(broker, Credentials(device_id=device_id, directory=directory))
    try:
        assert client.connect(timeout=10), broker.log()[-2000:]
        client.subscribe(f"devices/{device_id}/#")
        assert client.publish(f"devices/{device_id}/telemetry", b"21.5") in ACCEPTED
        assert client.next_message(timeout=5) == (f"devices/{device_id}/telemetry", b"21.5")
        assert client.publish("devices/someone-else/telemetry") == NOT_AUTHORIZED
    finally:
        client.close()


class TestWithAnEnrolmentCode:
    def test_curl_and_openssl_enrol_a_device_that_then_uses_its_topics(
        self, front: Front, broker: Broker, ca: CertificateAuthority, api_token: str, tmp_path: Path
    ) -> None:
        registered = _register_for_est(front, api_token, "est-gateway")
        device_id = registered["id"]
        assert registered["status"] == "awaiting_enrollment" and registered["certificate"] is None
        work = tmp_path / "device"
        _new_csr(work)
        status, body = _enroll(front, work, "--user", f"{device_id}:{registered['enrollment_code']}")
        assert status == 200, body
        certificate = _enrolled_certificate(work, ca, device_id)
        device = Device.objects.get(pk=device_id)
        assert device.status == DeviceStatus.ACTIVE
        assert device.current_certificate is not None
        assert device.current_certificate.serial == serial_hex(certificate.serial_number)
        event = AuditEvent.objects.get(action=AuditAction.DEVICE_ENROLLED, device_id=device_id)
        assert event.detail["method"] == "enrollment_code"
        _uses_its_topics(broker, work, device_id)

        # The code worked once: replayed, it is refused, with the challenge RFC 7030 3.2.3 asks for.
        replay = httpx.post(
            f"{front.https}{SIMPLEENROLL}",
            content=(work / "csr.b64").read_bytes(),
            headers={"Content-Type": "application/pkcs10"},
            auth=(device_id, registered["enrollment_code"]),
            verify=_tls(front),
        )
        assert replay.status_code == 401
        assert replay.headers["WWW-Authenticate"] == 'Basic realm="est"'
        assert Device.objects.get(pk=device_id).certificates.count() == 1

    def test_repeated_wrong_codes_lock_the_device_out(
        self, front: Front, api_token: str, settings: Any, tmp_path: Path
    ) -> None:
        registered = _register_for_est(front, api_token, "guessed-gateway")
        work = tmp_path / "device"
        _new_csr(work)
        for attempt in range(settings.ENROLLMENT_CODE_MAX_FAILURES):
            status, _ = _enroll(front, work, "--user", f"{registered['id']}:wrong-guess-{attempt}")
            assert status == 401
        # Locked out: the right code too, so the answer never tells which guess was right.
        status, body = _enroll(front, work, "--user", f"{registered['id']}:{registered['enrollment_code']}")
        assert status == 429, body
        assert Device.objects.get(pk=registered["id"]).status == DeviceStatus.AWAITING_ENROLLMENT

    def test_a_revoked_device_cannot_use_its_code(self, front: Front, api_token: str, tmp_path: Path) -> None:
        registered = _register_for_est(front, api_token, "revoked-before-enrolment")
        revoked = httpx.post(
            f"{front.https}/api/v1/revoke/{registered['id']}",
            json={"reason": "cessationOfOperation"},
            headers={"Authorization": f"Token {api_token}"},
            verify=_tls(front),
        )
        assert revoked.status_code == 200, revoked.text
        work = tmp_path / "device"
        _new_csr(work)
        status, _ = _enroll(front, work, "--user", f"{registered['id']}:{registered['enrollment_code']}")
        assert status == 401


# --- Zero-touch ----------------------------------------------------------------------------

OPENSSL_CA_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[device]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
[ca]
default_ca = factory
[factory]
database = index.txt
new_certs_dir = .
certificate = ca.pem
private_key = ca.key
serial = serial.txt
default_md = sha256
policy = anything
preserve = yes
unique_subject = no
x509_extensions = device
[anything]
organizationName = optional
commonName = optional
serialNumber = optional
"""


@dataclass(frozen=True)
class Manufacturer:
    directory: Path

    @property
    def ca_pem(self) -> str:
        return (self.directory / "ca.pem").read_text()

    def run(self, command: str) -> None:
        done = _shell(command, self.directory)
        assert done.returncode == 0, done.stderr

    def factory_certificate(self, name: str, hardware_id: str, *, dates: str = "-days 3650") -> Path:
        """A device's factory key and certificate (IDevID), as a factory line makes them:
        `openssl ca` (its start and end dates can be set, to make an expired one)."""
        self.run(
            f"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key "
            f"-subj '/O=Acme/CN=gateway/serialNumber={hardware_id}' -out {name}.csr -config ca.cnf"
        )
        self.run(f"openssl ca -batch -config ca.cnf {dates} -in {name}.csr -out {name}.pem -notext")
        return self.directory / name


def make_manufacturer(directory: Path, name: str) -> Manufacturer:
    directory.mkdir(parents=True)
    (directory / "ca.cnf").write_text(OPENSSL_CA_CONFIG)
    (directory / "index.txt").write_text("")
    (directory / "serial.txt").write_text(secrets.token_hex(8) + "\n")
    manufacturer = Manufacturer(directory)
    manufacturer.run(
        "openssl req -new -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
        f"-out ca.pem -days 3650 -subj '/O={name}/CN={name} Manufacturing CA' "
        "-config ca.cnf -extensions v3_ca"
    )
    return manufacturer


def _factory_auth(stem: Path) -> tuple[str, ...]:
    return ("--cert", f"{stem}.pem", "--key", f"{stem}.key")


def _refusals() -> list[str]:
    return list(
        AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_REFUSED)
        .order_by("pk")
        .values_list("detail__reason", flat=True)
    )


class TestZeroTouch:
    def test_a_factory_certificate_enrols_a_device_no_one_registered(
        self, front: Front, broker: Broker, ca: CertificateAuthority, tmp_path: Path
    ) -> None:
        acme = make_manufacturer(tmp_path / "acme", "Acme")
        create_enrollment_group(name="acme-gateways", ca_certificate=acme.ca_pem)
        first = acme.factory_certificate("gw1", "ACME-GW-0001")
        work = tmp_path / "gw1"
        _new_csr(work)
        status, body = _enroll(front, work, *_factory_auth(first))
        assert status == 200, body
        device = Device.objects.get(hardware_id="ACME-GW-0001")
        assert device.status == DeviceStatus.ACTIVE
        assert device.name == "acme-gateways ACME-GW-0001"
        assert device.metadata == {"enrollment_group": "acme-gateways"}
        certificate = _enrolled_certificate(work, ca, str(device.id))
        # The operational certificate holds the device's new key, not the factory key.
        factory = x509.load_pem_x509_certificate(Path(f"{first}.pem").read_bytes())
        assert certificate.public_key() != factory.public_key()
        event = AuditEvent.objects.get(action=AuditAction.DEVICE_ENROLLED, device_id=device.id)
        assert event.detail["method"] == "factory_certificate"
        assert event.detail["group"] == "acme-gateways"
        _uses_its_topics(broker, work, str(device.id))

    def test_refusals_are_audited(self, front: Front, tmp_path: Path) -> None:
        acme = make_manufacturer(tmp_path / "acme", "Acme")
        group = create_enrollment_group(
            name="acme-gateways", ca_certificate=acme.ca_pem, allowed_hardware_ids=["ACME-1", "ACME-2"]
        )
        work = tmp_path / "device"
        _new_csr(work)
        assert _enroll(front, work, *_factory_auth(acme.factory_certificate("one", "ACME-1")))[0] == 200

        # Another device claiming the same hardware id.
        status, body = _enroll(front, work, *_factory_auth(acme.factory_certificate("clone", "ACME-1")))
        assert status == 409 and "ACME-1" in body
        # Not on the group's allow-list.
        assert _enroll(front, work, *_factory_auth(acme.factory_certificate("stray", "ACME-9")))[0] == 403
        # A certificate from a CA no group trusts.
        other = make_manufacturer(tmp_path / "other", "Other")
        status, _ = _enroll(front, work, *_factory_auth(other.factory_certificate("alien", "ACME-2")))
        assert status == 401
        # An expired factory certificate (valid for two seconds, within the CA's validity: a path
        # to the group's CA that held once, so "expired", not "untrusted").
        start = dt.datetime.now(dt.UTC)
        end = start + dt.timedelta(seconds=2)
        expired = acme.factory_certificate(
            "old", "ACME-2", dates=f"-startdate {start:%Y%m%d%H%M%S}Z -enddate {end:%Y%m%d%H%M%S}Z"
        )
        time.sleep(max(0.0, (start + dt.timedelta(seconds=3) - dt.datetime.now(dt.UTC)).total_seconds()))
        status, _ = _enroll(front, work, *_factory_auth(expired))
        assert status == 401  # refused by the portal, not by nginx (error_page 495)
        # A disabled group enrols no one.
        update_enrollment_group(group, enabled=False)
        status, _ = _enroll(front, work, *_factory_auth(acme.factory_certificate("two", "ACME-2")))
        assert status == 403
        assert Device.objects.count() == 1
        assert _refusals() == [
            "hardware_id_exists",
            "hardware_id_not_allowed",
            "factory_certificate_untrusted",
            "factory_certificate_expired",
            "enrollment_group_disabled",
        ]

    def test_a_forged_certificate_header_straight_to_gunicorn_is_401(
        self, front: Front, tmp_path: Path
    ) -> None:
        acme = make_manufacturer(tmp_path / "acme", "Acme")
        create_enrollment_group(name="acme-gateways", ca_certificate=acme.ca_pem)
        stem = acme.factory_certificate("gw", "ACME-GW-7")
        csr = _new_csr(tmp_path / "device").read_bytes()
        forged = {
            "Content-Type": "application/pkcs10",
            "X-Client-Cert": quote(Path(f"{stem}.pem").read_text(), safe=""),
            "X-Client-Verify": "SUCCESS",
        }
        for secret in (None, "wrong-" + front.secret[6:]):
            headers = forged if secret is None else {**forged, "X-Proxy-Secret": secret}
            answer = httpx.post(f"{front.direct}{SIMPLEENROLL}", content=csr, headers=headers)
            assert answer.status_code == 401, answer.text
            assert answer.headers["WWW-Authenticate"] == 'Basic realm="est"'
        assert not Device.objects.exists()
        assert not EnrollmentGroup.objects.filter(enabled=False).exists()
