"""`onboard device enroll` end to end: the reference client against Debian's nginx (proxy_config)
in front of gunicorn, the enrolled certificate used on a real Mosquitto with paho-mqtt. With a
one-time enrolment code, and zero-touch with a factory certificate from an `openssl`-made
manufacturer CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from devices.models import Device, DeviceStatus
from enrollment.services import create_enrollment_group
from onboard_cli.main import main as onboard
from pki.keystore import CertificateAuthority
from tests.support.est_front import Front, enrollment_front, register_for_est, uses_its_topics
from tests.support.helpers import superuser_token
from tests.support.manufacturer import openssl_manufacturer
from tests.support.mosquitto import Broker

# gunicorn's processes share the test database: committed rows only; one broker backend is enough.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("mosquitto", ["mosquitto_acl"], indirect=True),
]


@pytest.fixture
def front(ca: CertificateAuthority, mosquitto: Broker, settings: Any, tmp_path: Path) -> Iterator[Front]:
    with enrollment_front(ca, mosquitto, settings, tmp_path) as started:
        yield started


def _files(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    return ["--cert", str(directory / "device.crt"), "--key", str(directory / "device.key")]


def _common_name(path: Path) -> str:
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_enrol_with_a_code_then_use_the_broker(
    front: Front, mosquitto: Broker, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered = register_for_est(front, superuser_token("est-operator"), "cli-gateway")
    device_id, code = registered["id"], registered["enrollment_code"]
    work = tmp_path / "device"
    command = ["device", "enroll", "--url", front.https, "--ca", str(front.ca_file), "--id", device_id,
               *_files(work)]  # fmt: skip

    # A wrong code: the portal's one-line reason, exit 1, nothing written.
    assert onboard([*command, "--code", "not-the-code"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("onboard: ") and "401 " in error and len(error.strip().splitlines()) == 1
    assert not (work / "device.crt").exists() and not (work / "device.key").exists()

    # The right one, from the environment (not in the process list).
    monkeypatch.setenv("ONBOARD_ENROLLMENT_CODE", code)
    assert onboard(command) == 0, capsys.readouterr()
    assert f"Enrolled device {device_id}" in capsys.readouterr().out
    assert (work / "device.key").stat().st_mode & 0o777 == 0o600
    assert _common_name(work / "device.crt") == device_id
    assert Device.objects.get(pk=device_id).status == DeviceStatus.ACTIVE
    uses_its_topics(mosquitto, work, device_id)

    # No overwrite without --force: refused before anything is sent (exit 2, files unchanged).
    before = (work / "device.key").read_bytes(), (work / "device.crt").read_bytes()
    assert onboard(command) == 2
    assert "--force" in capsys.readouterr().err
    assert ((work / "device.key").read_bytes(), (work / "device.crt").read_bytes()) == before
    # With --force the request goes out; the spent code is refused and the files stay as they were.
    assert onboard([*command, "--force"]) == 1
    assert ((work / "device.key").read_bytes(), (work / "device.crt").read_bytes()) == before


def test_code_file_and_usage_errors(front: Front, tmp_path: Path, capsys: Any) -> None:
    registered = register_for_est(front, superuser_token("est-operator"), "file-gateway")
    work = tmp_path / "device"
    base = ["device", "enroll", "--url", front.https, "--ca", str(front.ca_file), *_files(work)]
    assert onboard([*base, "--id", registered["id"]]) == 2  # no code anywhere
    assert "ONBOARD_ENROLLMENT_CODE" in capsys.readouterr().err
    assert onboard([*base, "--id", registered["id"], "--code-file", str(tmp_path / "missing")]) == 2
    assert onboard([*base, "--factory-cert", str(tmp_path / "f.pem")]) == 2  # no --factory-key
    # Unreachable: exit 3.
    down = ["device", "enroll", "--url", "https://127.0.0.1:9", "--ca", str(front.ca_file), *_files(work)]
    assert onboard([*down, "--id", registered["id"], "--code", "x"]) == 3
    capsys.readouterr()

    code_file = tmp_path / "code"
    code_file.write_text(registered["enrollment_code"] + "\n")
    code_file.chmod(0o600)
    assert (
        onboard([*base, "--id", registered["id"], "--code-file", str(code_file), "--key-type", "rsa2048"])
        == 0
    )
    key = (work / "device.key").read_text()
    assert "PRIVATE KEY" in key and _common_name(work / "device.crt") == registered["id"]
    public_key = x509.load_pem_x509_certificate((work / "device.crt").read_bytes()).public_key()
    assert getattr(public_key, "key_size", None) == 2048


def test_zero_touch_with_a_factory_certificate(
    front: Front, mosquitto: Broker, tmp_path: Path, capsys: Any
) -> None:
    factory = tmp_path / "factory"
    pki = openssl_manufacturer(factory, "OPENSSL-GW-1")
    create_enrollment_group(name="openssl-gateways", ca_certificate=pki.ca_pem)
    work = tmp_path / "device"
    command = ["device", "enroll", "--url", front.https, "--ca", str(front.ca_file), "--json",
               "--factory-cert", str(factory / "device.pem"), "--factory-key", str(factory / "device.key"),
               *_files(work)]  # fmt: skip
    assert onboard(command) == 0, capsys.readouterr()
    device = Device.objects.get(hardware_id="OPENSSL-GW-1")
    assert f'"device_id": "{device.id}"' in capsys.readouterr().out
    enrolled = x509.load_pem_x509_certificate((work / "device.crt").read_bytes())
    assert enrolled.public_key() != pki.device.public_key()  # a new key, not the factory one
    uses_its_topics(mosquitto, work, str(device.id))

    # Again: the files are there, so nothing is sent without --force; with it, the portal refuses
    # a second device with that hardware id (one line, exit 1).
    assert onboard(command) == 2
    assert onboard([*command, "--force"]) == 1
    assert "OPENSSL-GW-1" in capsys.readouterr().err
