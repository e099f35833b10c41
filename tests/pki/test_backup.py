"""CA backup and restore: the encrypted archive, and a second instance that carries on the CA."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.management import CommandError, call_command

from pki.authority import initialize_ca
from pki.backup import MAGIC, BackupError, seal, unseal
from pki.crl import crl_number
from pki.issuance import issue_certificate
from pki.keystore import keystore
from pki.models import Certificate
from pki.profiles import KeyType, RevocationReason
from pki.revocation import revoke_certificate
from tests.support.helpers import manage, openssl_verify

PASSPHRASE = "backup-passphrase-for-tests"


class TestArchive:
    def test_round_trip(self) -> None:
        archive = seal({"format": 1, "x": "y"}, PASSPHRASE.encode())
        assert archive.startswith(MAGIC) and b'"x"' not in archive
        assert unseal(archive, PASSPHRASE.encode()) == {"format": 1, "x": "y"}

    def test_wrong_passphrase(self) -> None:
        archive = seal({"format": 1}, PASSPHRASE.encode())
        with pytest.raises(BackupError, match="passphrase is wrong or the file is damaged"):
            unseal(archive, b"another-passphrase!")

    def test_every_part_is_authenticated(self) -> None:
        archive = seal({"format": 1}, PASSPHRASE.encode())
        header_end = archive.index(b"\n", len(MAGIC))
        weaker_header = archive.replace(b'"n": 131072', b'"n": 16384')
        flipped_ciphertext = archive[:-1] + bytes([archive[-1] ^ 1])
        for damaged in (weaker_header, flipped_ciphertext):
            assert damaged != archive
            with pytest.raises(BackupError):
                unseal(damaged, PASSPHRASE.encode())
        with pytest.raises(BackupError, match="header"):
            unseal(archive[: len(MAGIC)] + b"{not json" + archive[header_end:], PASSPHRASE.encode())
        with pytest.raises(BackupError, match="not a CA backup"):
            unseal(b"PK\x03\x04 a zip", PASSPHRASE.encode())

    def test_short_passphrase_refused(self) -> None:
        with pytest.raises(BackupError, match="at least 12"):
            seal({}, b"short")


def test_export_writes_a_private_file_once(
    fresh_ca_root: Path, db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    initialize_ca(common_name="Backup Test CA", key_type=KeyType.EC_P256)
    out = tmp_path / "ca.backup"
    with pytest.raises(CommandError, match="CA_BACKUP_PASSPHRASE"):
        call_command("export_ca", "--out", str(out))
    monkeypatch.setenv("CA_BACKUP_PASSPHRASE", PASSPHRASE)
    call_command("export_ca", "--out", str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    payload = unseal(out.read_bytes(), PASSPHRASE.encode())
    assert set(payload) == {"format", "exported_at", "ca_certificate", "ca_key", "crl", "crl_number"}
    assert "BEGIN ENCRYPTED PRIVATE KEY" in payload["ca_key"]  # still under CA_KEY_PASSPHRASE
    with pytest.raises(CommandError, match="never overwritten"):
        call_command("export_ca", "--out", str(out))
    # Importing onto the instance that has the CA is refused without --force.
    with pytest.raises(CommandError, match="already exists"):
        call_command("import_ca", "--in", str(out))


def test_export_to_standard_output_and_forced_import(
    fresh_ca_root: Path, db: None, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    initialize_ca(common_name="Backup Test CA", key_type=KeyType.EC_P256)
    monkeypatch.setenv("CA_BACKUP_PASSPHRASE", PASSPHRASE)
    call_command("export_ca", "--out", "-")
    archive = capsysbinary.readouterr().out
    assert archive.startswith(MAGIC)
    original = (fresh_ca_root / "ca.crt").read_bytes()
    (fresh_ca_root.parent / "ca.backup").write_bytes(archive)
    call_command("import_ca", "--in", str(fresh_ca_root.parent / "ca.backup"), "--force")
    kept = sorted(path.name.split(".replaced-")[0] for path in fresh_ca_root.glob("*.replaced-*"))
    assert kept == ["ca.crt", "ca.key", "crl.pem"]
    assert (fresh_ca_root / "ca.crt").read_bytes() == original
    assert stat.S_IMODE((fresh_ca_root / "ca.key").stat().st_mode) == 0o600


def test_import_refuses_a_database_that_lacks_the_revocations(
    fresh_ca_root: Path, db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    initialize_ca(common_name="Backup Test CA", key_type=KeyType.EC_P256)
    revoke_certificate(issue_certificate("gone", key_type=KeyType.EC_P256).record)
    monkeypatch.setenv("CA_BACKUP_PASSPHRASE", PASSPHRASE)
    call_command("export_ca", "--out", str(tmp_path / "ca.backup"))
    second_output = fresh_ca_root.parent / "second"
    settings.CA_ROOT_PATH = second_output
    # A fresh instance whose database was not restored: it knows no revoked certificate.
    Certificate.objects.all().delete()
    with pytest.raises(CommandError, match="restore the database dump first"):
        call_command("import_ca", "--in", str(tmp_path / "ca.backup"))
    assert not second_output.exists()


def test_a_second_instance_restores_the_ca_and_carries_on(
    fresh_ca_root: Path, db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # The first instance: a CA, two devices, one revoked; then the database dump and the archive.
    initialize_ca(common_name="Restored CA", key_type=KeyType.EC_P256)
    # Device CNs are device ids (the ACL the broker gets names them).
    kept = issue_certificate(str(uuid.uuid4()), key_type=KeyType.EC_P256).record
    lost = issue_certificate(str(uuid.uuid4()), key_type=KeyType.EC_P256).record
    revoke_certificate(lost, RevocationReason.KEY_COMPROMISE)
    exported_number = _crl_number(fresh_ca_root / "crl.pem")
    monkeypatch.setenv("CA_BACKUP_PASSPHRASE", PASSPHRASE)
    archive = tmp_path / "ca.backup"
    call_command("export_ca", "--out", str(archive))
    dump = tmp_path / "pki.json"
    call_command("dumpdata", "pki", "--output", str(dump))
    assert json.loads(dump.read_text())
    (tmp_path / "kept.pem").write_text(kept.pem)
    (tmp_path / "lost.pem").write_text(lost.pem)
    (tmp_path / "old-key-passphrase").write_text(settings.CA_KEY_PASSPHRASE)
    (tmp_path / "backup-passphrase").write_text(PASSPHRASE)

    # The second instance: its own data directory, database and CA passphrase.
    second = tmp_path / "second"
    env = {
        "DATA_DIR": str(second),
        "DATABASE_URL": f"sqlite:///{second / 'devices.db'}",
        "SECRET_KEY": "s" * 50,
        "CA_KEY_PASSPHRASE": "the-second-instance-passphrase",
        "SECURE_SSL_REDIRECT": "false",
    }

    def run(*args: str) -> str:
        result = manage(*args, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    run("migrate", "--no-input")
    run("loaddata", str(dump))
    restored = run(
        "import_ca",
        "--in",
        str(archive),
        "--passphrase-file",
        str(tmp_path / "backup-passphrase"),
        "--source-key-passphrase-file",
        str(tmp_path / "old-key-passphrase"),
    )
    assert f"CRL number {exported_number}" in restored
    certs = second / "certs"
    assert (certs / "ca.crt").read_bytes() == (fresh_ca_root / "ca.crt").read_bytes()
    assert stat.S_IMODE((certs / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    serialization.load_pem_private_key(
        (certs / "ca.key").read_bytes(), password=b"the-second-instance-passphrase"
    )  # re-encrypted under this instance's passphrase

    # Existing device certificates verify against the restored CA, and the revoked one stays revoked.
    assert openssl_verify(certs / "ca.crt", tmp_path / "kept.pem").returncode == 0
    crl_check = openssl_verify(
        certs / "ca.crt", tmp_path / "lost.pem", "-crl_check", "-CRLfile", certs / "crl.pem"
    )
    assert crl_check.returncode != 0 and "certificate revoked" in crl_check.stdout + crl_check.stderr

    # The next CRL it signs continues the numbering and still lists the revocation.
    run("refresh_crl", "--force")
    assert _crl_number(certs / "crl.pem") == exported_number + 1
    crl = x509.load_pem_x509_crl((certs / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(lost.serial_number) is not None
    assert crl.is_signature_valid(keystore().load().certificate.public_key())  # type: ignore[arg-type]

    # A second import is refused: the CA exists now.
    refused = manage(
        "import_ca", "--in", str(archive), "--passphrase-file", str(tmp_path / "backup-passphrase"), env=env
    )
    assert refused.returncode == 1 and "pass --force" in refused.stderr and "Traceback" not in refused.stderr


def _crl_number(path: Path) -> int:
    return crl_number(x509.load_pem_x509_crl(path.read_bytes()))
