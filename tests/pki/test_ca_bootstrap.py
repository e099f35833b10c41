"""`init_ca`, the key store's protections, and the system checks that report a broken CA."""

from __future__ import annotations

import datetime as dt
import stat
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import call_command
from django.core.management.base import CommandError

from pki import errors
from pki.checks import check_certificate_authority
from pki.keystore import forget_loaded_ca, get_ca, keystore
from tests.support.helpers import lint_certificate_file, lint_crl_file, run_tool

pytestmark = pytest.mark.django_db


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_ids() -> list[str]:
    return [message.id or "" for message in check_certificate_authority()]


def init_ca(*args: str) -> str:
    out = StringIO()
    call_command("init_ca", *args, stdout=out)
    return out.getvalue()


def test_init_ca_creates_a_protected_encrypted_ca(fresh_ca_root: Path, settings) -> None:
    output = init_ca("--key-type", "ec-p256", "--common-name", "Factory Root", "--validity-days", "400")
    assert "Created the certificate authority: CN=Factory Root" in output
    key_file, certificate_file, crl_file = (
        fresh_ca_root / "ca.key",
        fresh_ca_root / "ca.crt",
        fresh_ca_root / "crl.pem",
    )
    assert mode(fresh_ca_root) == 0o700
    assert mode(key_file) == 0o600
    assert (fresh_ca_root / "devices").is_dir()
    # Encrypted PKCS#8: openssl opens it with the passphrase and not without.
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in key_file.read_bytes()
    opened = run_tool(
        "openssl", "pkey", "-in", key_file, "-passin", f"pass:{settings.CA_KEY_PASSPHRASE}", "-noout"
    )
    assert opened.returncode == 0, opened.stderr
    refused = run_tool("openssl", "pkey", "-in", key_file, "-passin", "pass:wrong", "-noout")
    assert refused.returncode != 0

    certificate = x509.load_pem_x509_certificate(certificate_file.read_bytes())
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert dt.timedelta(days=400) <= lifetime <= dt.timedelta(days=400, minutes=6)
    assert lint_certificate_file(certificate_file).returncode == 0
    assert lint_crl_file(crl_file).returncode == 0
    assert check_ids() == []


def test_init_ca_twice_changes_nothing(fresh_ca_root: Path) -> None:
    init_ca("--key-type", "ec-p256")
    files = {path.name: path.read_bytes() for path in fresh_ca_root.iterdir() if path.is_file()}
    output = init_ca("--key-type", "rsa2048", "--common-name", "Another")
    assert "already exists; nothing changed" in output
    assert {path.name: path.read_bytes() for path in fresh_ca_root.iterdir() if path.is_file()} == files


def test_default_ca_is_rsa3072(fresh_ca_root: Path) -> None:
    init_ca()
    key = get_ca().private_key
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072


def test_invalid_validity_is_a_one_line_command_error(fresh_ca_root: Path) -> None:
    with pytest.raises(CommandError, match="at least one day"):
        init_ca("--validity-days", "0")
    assert not fresh_ca_root.exists() or not (fresh_ca_root / "ca.key").exists()


def test_missing_ca_is_reported_and_refused(fresh_ca_root: Path) -> None:
    assert check_ids() == ["pki.W001"]
    with pytest.raises(errors.CANotInitialized, match="init_ca"):
        get_ca()


@pytest.mark.parametrize(
    ("target", "loose_mode"),
    [("ca.key", 0o640), ("ca.key", 0o604), (".", 0o750)],
)
def test_loose_permissions_are_refused(fresh_ca_root: Path, target: str, loose_mode: int) -> None:
    init_ca("--key-type", "ec-p256")
    (fresh_ca_root / target).chmod(loose_mode)
    forget_loaded_ca()
    assert "pki.E002" in check_ids()
    with pytest.raises(errors.CAKeyError, match="must be 0"):
        get_ca()


def test_wrong_passphrase_is_reported(fresh_ca_root: Path, settings) -> None:
    init_ca("--key-type", "ec-p256")
    settings.CA_KEY_PASSPHRASE = "not-the-passphrase"
    forget_loaded_ca()
    assert check_ids() == ["pki.E004"]
    with pytest.raises(errors.CAKeyError, match="CA_KEY_PASSPHRASE is wrong"):
        get_ca()


def test_unreadable_key_is_reported(fresh_ca_root: Path) -> None:
    init_ca("--key-type", "ec-p256")
    (fresh_ca_root / "ca.key").write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\ngarbage\n")
    assert check_ids() == ["pki.E004"]


def test_key_of_another_ca_is_reported(fresh_ca_root: Path, tmp_path: Path, settings) -> None:
    init_ca("--key-type", "ec-p256")
    other_root = tmp_path / "other"
    settings.CA_ROOT_PATH = other_root
    init_ca("--key-type", "ec-p256")
    (fresh_ca_root / "ca.key").write_bytes((other_root / "ca.key").read_bytes())
    settings.CA_ROOT_PATH = fresh_ca_root
    forget_loaded_ca()
    with pytest.raises(errors.CAKeyError, match="does not belong"):
        keystore().load()


def test_half_a_ca_is_an_error(fresh_ca_root: Path) -> None:
    init_ca("--key-type", "ec-p256")
    (fresh_ca_root / "ca.crt").unlink()
    assert check_ids() == ["pki.E003"]


def test_expiry_warning_and_expired_error(fresh_ca_root: Path) -> None:
    init_ca("--key-type", "ec-p256", "--validity-days", "60")
    assert check_ids() == []
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=45)):
        assert check_ids() == ["pki.W006"]
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=61)):
        assert check_ids() == ["pki.E005"]
