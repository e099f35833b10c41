"""A CRL damaged or tampered with after publication is never served or reported healthy.

/health, /crl.pem and /ca.crl read the CRL through one function (pki.crl.read_published_crl):
it must parse, be signed by the CA and have a future nextUpdate, or each answers 503
`crl_invalid` (never 500, never "ok").
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rest_framework.test import APIClient

from pki.crl import crl_path, publish_crl
from pki.keystore import CertificateAuthority, forget_loaded_ca

BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@pytest.fixture
def own_ca(ca: CertificateAuthority, settings: Any, tmp_path: Path) -> Path:
    """A copy of the session CA this test may damage, with a CRL published now."""
    root = tmp_path / "certs"
    shutil.copytree(settings.CA_ROOT_PATH, root)
    settings.CA_ROOT_PATH = root
    forget_loaded_ca()
    publish_crl()
    return crl_path()


def flipped(pem: bytes, position: int) -> bytes:
    """The PEM with the base64 character at `position` (in its body) replaced by another one."""
    lines = pem.decode().splitlines(keepends=True)
    body = "".join(lines[1:-1]).replace("\n", "")
    char = body[position]
    replacement = BASE64[(BASE64.index(char) + 1) % 64]
    tampered = body[:position] + replacement + body[position + 1 :]
    wrapped = "".join(tampered[i : i + 64] + "\n" for i in range(0, len(tampered), 64))
    return (lines[0] + wrapped + lines[-1]).encode()


def assert_refused_everywhere(code: str = "crl_invalid") -> None:
    client = APIClient()
    health = client.get("/health")
    assert health.status_code == 503
    assert "crl" in health.json()["failed"]
    check = health.json()["checks"]["crl"]
    assert check["status"] == "fail" and check["code"] == code, check
    for path in ("/crl.pem", "/ca.crl", "/api/v1/health"):
        response = client.get(path)
        assert response.status_code == 503, (path, response.content[:200])
        if path != "/api/v1/health":
            assert response["Content-Type"] == "application/json"
            assert response.json()["error"]["code"] == code
            assert response["Cache-Control"] == "no-store"


def body_length(pem: bytes) -> int:
    return len("".join(pem.decode().splitlines()[1:-1]))


def test_an_intact_crl_is_served_and_healthy(own_ca: Path) -> None:
    client = APIClient()
    check = client.get("/health").json()["checks"]["crl"]
    assert check["status"] == "ok"
    assert client.get("/crl.pem").content == own_ca.read_bytes()
    der = client.get("/ca.crl")
    assert der.status_code == 200 and der["Content-Type"] == "application/pkix-crl"
    assert x509.load_der_x509_crl(der.content).public_bytes(serialization.Encoding.PEM) == own_ca.read_bytes()


# Spread over the whole body: header, issuer, dates, extensions, signature algorithm and value.
# The last few characters are left alone: base64 padding bits there may decode to the same bytes.
@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
def test_one_flipped_base64_character_is_refused_everywhere(own_ca: Path, fraction: float) -> None:
    pem = own_ca.read_bytes()
    assert APIClient().get("/ca.crl").status_code == 200  # verified once (and remembered)
    position = int((body_length(pem) - 4) * fraction)
    own_ca.write_bytes(flipped(pem, position))
    assert own_ca.read_bytes() != pem
    assert_refused_everywhere()


def test_a_changed_ca_certificate_is_checked_again(own_ca: Path, settings: Any) -> None:
    assert APIClient().get("/ca.crl").status_code == 200
    ca_certificate = Path(settings.CA_ROOT_PATH) / "ca.crt"
    other = ec.generate_private_key(ec.SECP256R1())
    original = x509.load_pem_x509_certificate(ca_certificate.read_bytes())
    now = dt.datetime.now(dt.UTC)
    replaced = (
        x509.CertificateBuilder()
        .subject_name(original.subject)
        .issuer_name(original.subject)
        .public_key(other.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(other, hashes.SHA256())
    )
    ca_certificate.write_bytes(replaced.public_bytes(serialization.Encoding.PEM))
    assert_refused_everywhere()


def test_garbage_is_503_not_500(own_ca: Path) -> None:
    own_ca.write_bytes(b"this is not a CRL\n")
    assert_refused_everywhere()


def test_a_crl_signed_by_another_key_is_refused(own_ca: Path, ca: CertificateAuthority) -> None:
    # Same issuer name, same shape, a valid signature: only not the CA's.
    impostor = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(10**6), critical=False)
        .sign(impostor, hashes.SHA256())
    )
    own_ca.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    assert_refused_everywhere()


def test_a_crl_past_its_next_update_is_refused(own_ca: Path, settings: Any) -> None:
    assert APIClient().get("/ca.crl").status_code == 200  # verified once (and remembered)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=settings.CRL_VALIDITY_HOURS + 1)
    with time_machine.travel(later):
        assert_refused_everywhere()


def test_no_crl_is_503_with_its_own_code(own_ca: Path) -> None:
    own_ca.unlink()
    assert_refused_everywhere("crl_not_published")
