"""Backup and restore of the certificate authority: one encrypted archive file.

The archive holds what the database does not: the CA certificate, the CA key (still encrypted
PKCS#8, as it rests in `ca.key`), the current CRL and its CRL number. Together with a database
dump it is everything needed to bring the CA back on a new machine.

Format (version 1):

    iot-onboarding-ca-backup 1\\n
    {"cipher": "AES-256-GCM", "kdf": "scrypt", "n": ..., "r": ..., "p": ..., "salt": b64, "nonce": b64}\\n
    <ciphertext and 16-byte GCM tag>

The key comes from the backup passphrase through scrypt (memory-hard, so a stolen archive resists
guessing far better than the 1,000 PBKDF2 rounds of a WinZip-AES ZIP), and AES-GCM authenticates
the ciphertext and both header lines: a flipped bit or a weakened KDF parameter fails to open
instead of restoring something else. The CA key inside is encrypted a second time under
CA_KEY_PASSPHRASE, so the archive alone, even opened, does not give the key away.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from kernel.fs import write_atomically
from kernel.locks import exclusive_lock
from pki.crl import CRL_LOCK, crl_number, crl_path
from pki.errors import PKIError
from pki.keystore import forget_loaded_ca, get_ca, keystore
from pki.models import Certificate, CertificateRevocationList, CertificateStatus
from pki.profiles import serial_hex

MAGIC = b"iot-onboarding-ca-backup 1\n"
# scrypt with N=2^17, r=8: 128 MiB and a fraction of a second per try (RFC 7914; the
# parameters OWASP lists for scrypt's interactive-to-sensitive range).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
MINIMUM_PASSPHRASE_LENGTH = 12


class BackupError(PKIError):
    code = "ca_backup_failed"
    status = 400


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def seal(payload: dict[str, Any], passphrase: bytes) -> bytes:
    """Encrypt and authenticate `payload` (JSON) under a key derived from `passphrase`."""
    if len(passphrase) < MINIMUM_PASSPHRASE_LENGTH:
        raise BackupError(f"The backup passphrase must be at least {MINIMUM_PASSPHRASE_LENGTH} characters.")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {
        "cipher": "AES-256-GCM",
        "kdf": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
    }
    header_line = json.dumps(header, sort_keys=True).encode() + b"\n"
    key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ciphertext = AESGCM(key).encrypt(nonce, json.dumps(payload).encode(), MAGIC + header_line)
    return MAGIC + header_line + ciphertext


def unseal(data: bytes, passphrase: bytes) -> dict[str, Any]:
    """The payload of an archive made by `seal`; BackupError for a wrong passphrase or damage."""
    if not data.startswith(MAGIC):
        raise BackupError("This file is not a CA backup made by `export_ca` (or of a newer format).")
    header_line, separator, ciphertext = data[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(header_line)
        salt = base64.b64decode(header["salt"])
        nonce = base64.b64decode(header["nonce"])
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
        if header["cipher"] != "AES-256-GCM" or header["kdf"] != "scrypt" or not separator:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise BackupError("The backup's header is damaged.") from None
    # The header is authenticated, but only after the KDF ran: bound it so a forged header
    # cannot make us burn gigabytes before the tag check fails.
    if not (2**14 <= n <= 2**20 and 1 <= r <= 16 and 1 <= p <= 4):
        raise BackupError("The backup's key-derivation parameters are out of range.")
    key = _derive(passphrase, salt, n, r, p)
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, MAGIC + header_line + b"\n")
    except InvalidTag:
        raise BackupError(
            "The backup cannot be opened: the passphrase is wrong or the file is damaged."
        ) from None
    payload: dict[str, Any] = json.loads(plaintext)
    return payload


@dataclass(frozen=True)
class Snapshot:
    """What an archive holds, parsed."""

    certificate: x509.Certificate
    encrypted_key_pem: bytes
    crl: x509.CertificateRevocationList
    crl_number: int
    exported_at: str

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": 1,
            "exported_at": self.exported_at,
            "ca_certificate": self.certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "ca_key": self.encrypted_key_pem.decode(),
            "crl": self.crl.public_bytes(serialization.Encoding.PEM).decode(),
            "crl_number": self.crl_number,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Snapshot:
        try:
            if payload["format"] != 1:
                raise ValueError
            return cls(
                certificate=x509.load_pem_x509_certificate(payload["ca_certificate"].encode()),
                encrypted_key_pem=payload["ca_key"].encode(),
                crl=x509.load_pem_x509_crl(payload["crl"].encode()),
                crl_number=int(payload["crl_number"]),
                exported_at=str(payload["exported_at"]),
            )
        except (KeyError, ValueError, TypeError, AttributeError):
            raise BackupError("The backup opened but its contents are not a CA snapshot.") from None


def export_ca(passphrase: bytes) -> bytes:
    """The CA as an encrypted archive. Taken under the CRL lock, so the CRL is not half-replaced."""
    authority = get_ca()  # proves the key opens with CA_KEY_PASSPHRASE before we vouch for it
    with exclusive_lock(CRL_LOCK):
        try:
            crl = x509.load_pem_x509_crl(crl_path().read_bytes())
        except (OSError, ValueError):
            raise BackupError(
                "There is no readable CRL to back up; run `refresh_crl --force` first."
            ) from None
        key_pem = keystore().key_path.read_bytes()
    snapshot = Snapshot(
        certificate=authority.certificate,
        encrypted_key_pem=key_pem,
        crl=crl,
        crl_number=crl_number(crl),
        exported_at=timezone.now().isoformat(),
    )
    return seal(snapshot.to_payload(), passphrase)


@dataclass(frozen=True)
class RestoreResult:
    certificate: x509.Certificate
    crl_number: int
    replaced: list[Path]


def _open_key(snapshot: Snapshot, key_passphrase: bytes) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(snapshot.encrypted_key_pem, password=key_passphrase)
    except (ValueError, TypeError):
        raise BackupError(
            "The CA key in the backup does not open with this instance's CA_KEY_PASSPHRASE; give the "
            "old instance's passphrase with --source-key-passphrase-file (the key is re-encrypted)."
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise BackupError("The CA key in the backup is of an unsupported type.")
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != snapshot.certificate.public_key().public_bytes(*public):
        raise BackupError("The CA key in the backup does not belong to its CA certificate.")
    return key


def _missing_revocations(crl: x509.CertificateRevocationList) -> int:
    """Certificates the restored CRL lists that this database does not know as revoked."""
    listed = {serial_hex(entry.serial_number) for entry in crl}
    known = set(Certificate.objects.filter(status=CertificateStatus.REVOKED).values_list("serial", flat=True))
    return len(listed - known)


def _refuse_existing(exists: bool, root: Path) -> None:
    if exists:
        raise BackupError(
            f"A certificate authority already exists in {root}; pass --force to replace it "
            "(its files are kept beside, renamed)."
        )


def import_ca(
    data: bytes, passphrase: bytes, *, force: bool = False, source_key_passphrase: bytes | None = None
) -> RestoreResult:
    """Put the archived CA in place on this instance; CRL numbering continues past the archive's.

    Refuses an existing CA unless `force` (the current files are kept beside, renamed), and a
    database that does not know the CRL's revocations: the next CRL, built from the database,
    would drop them and let revoked devices back in. Restore the database dump first.
    """
    store = keystore()
    _refuse_existing(store.exists() and not force, store.root)
    snapshot = Snapshot.from_payload(unseal(data, passphrase))
    key = _open_key(snapshot, source_key_passphrase or settings.CA_KEY_PASSPHRASE.encode())
    signer = snapshot.certificate.public_key()
    if not isinstance(
        signer, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    ) or not snapshot.crl.is_signature_valid(signer):
        raise BackupError("The CRL in the backup is not signed by its CA.")
    missing = _missing_revocations(snapshot.crl)
    if missing:
        raise BackupError(
            f"{missing} certificate(s) on the backed-up CRL are not revoked in this database: restore the "
            "database dump first, or the next CRL would drop them."
        )
    replaced: list[Path] = []
    with exclusive_lock(CRL_LOCK), transaction.atomic():
        _refuse_existing(store.exists() and not force, store.root)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        for path in (store.key_path, store.certificate_path, crl_path()):
            if path.exists():
                kept = path.with_name(f"{path.name}.replaced-{stamp}")
                path.rename(kept)
                replaced.append(kept)
        store.save(snapshot.certificate, key)
        (Path(settings.CA_ROOT_PATH) / "devices").mkdir(mode=0o700, exist_ok=True)
        write_atomically(crl_path(), snapshot.crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
        if not CertificateRevocationList.objects.filter(number__gte=snapshot.crl_number).exists():
            # RFC 5280 5.2.3: numbers only grow; the next CRL signed here follows this one.
            CertificateRevocationList.objects.create(
                number=snapshot.crl_number,
                this_update=snapshot.crl.last_update_utc,
                next_update=snapshot.crl.next_update_utc or snapshot.crl.last_update_utc,
                revoked_count=len(list(snapshot.crl)),
            )
    forget_loaded_ca()
    return RestoreResult(certificate=snapshot.certificate, crl_number=snapshot.crl_number, replaced=replaced)
