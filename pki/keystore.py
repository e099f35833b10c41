"""Where the CA's certificate and private key live, and the per-process cache of the loaded CA.

The key store is a small interface (django-ca keeps key storage behind one too) with a file
implementation: `ca.key` as encrypted PKCS#8 with mode 0600 in a 0700 directory. Loading and
checking an RSA key costs tens of milliseconds, far more than a signature, so a process loads
the CA once and keeps it.
"""

from __future__ import annotations

import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from django.conf import settings

from kernel.fs import write_new_private_file
from pki.errors import CAAlreadyExists, CAKeyError, CANotInitialized
from pki.profiles import PrivateKey, private_key_pem

KEY_FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    private_key: PrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


class KeyStore(Protocol):
    def exists(self) -> bool: ...

    def save(self, certificate: x509.Certificate, private_key: PrivateKey) -> None: ...

    def load(self) -> CertificateAuthority: ...

    def problems(self) -> list[str]: ...


class FileKeyStore:
    """`ca.crt` and `ca.key` under one directory (CA_ROOT_PATH)."""

    def __init__(self, root: Path, passphrase: str) -> None:
        self.root = root
        self._passphrase = passphrase.encode()

    @property
    def certificate_path(self) -> Path:
        return self.root / "ca.crt"

    @property
    def key_path(self) -> Path:
        return self.root / "ca.key"

    def exists(self) -> bool:
        return self.certificate_path.exists() or self.key_path.exists()

    def _require_passphrase(self) -> None:
        if not self._passphrase:
            raise CAKeyError(
                "This process runs without CA_KEY_PASSPHRASE (CA_KEY_PASSPHRASE_REQUIRED=false), "
                "so it cannot use the CA."
            )

    def save(self, certificate: x509.Certificate, private_key: PrivateKey) -> None:
        self._require_passphrase()
        if self.exists():
            raise CAAlreadyExists(f"A certificate authority already exists in {self.root}.")
        self.root.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        self.root.chmod(DIRECTORY_MODE)
        # Created 0600 from the first byte, and never written unencrypted.
        write_new_private_file(self.key_path, private_key_pem(private_key, self._passphrase))
        write_new_private_file(self.certificate_path, certificate.public_bytes(serialization.Encoding.PEM))
        self.certificate_path.chmod(0o644)

    def problems(self) -> list[str]:
        """Permission problems that make the key store unsafe to use; empty when all is well."""
        found = []
        for path, limit in ((self.root, DIRECTORY_MODE), (self.key_path, KEY_FILE_MODE)):
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except FileNotFoundError:
                continue
            if mode & ~limit:
                found.append(
                    f"{path} has mode {mode:04o}; it must be {limit:04o} or stricter "
                    f"(chmod {limit:o} {path})."
                )
        return found

    def load(self) -> CertificateAuthority:
        self._require_passphrase()
        if not self.certificate_path.exists() or not self.key_path.exists():
            raise CANotInitialized(
                f"No certificate authority in {self.root}: run `python manage.py init_ca` first."
            )
        problems = self.problems()
        if problems:
            raise CAKeyError("Refusing to use the CA key: " + " ".join(problems))
        try:
            certificate = x509.load_pem_x509_certificate(self.certificate_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise CAKeyError(f"The CA certificate {self.certificate_path} cannot be read: {exc}.") from None
        try:
            key_bytes = self.key_path.read_bytes()
        except OSError as exc:
            raise CAKeyError(f"The CA key {self.key_path} cannot be read: {exc.strerror}.") from None
        if b"ENCRYPTED PRIVATE KEY" not in key_bytes:
            raise CAKeyError(f"The CA key {self.key_path} is not encrypted; it must be encrypted PKCS#8.")
        try:
            private_key = serialization.load_pem_private_key(key_bytes, password=self._passphrase)
        except (ValueError, TypeError):
            raise CAKeyError(
                f"The CA key {self.key_path} cannot be decrypted: "
                "CA_KEY_PASSPHRASE is wrong or the file is damaged."
            ) from None
        if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise CAKeyError(f"The CA key {self.key_path} is of an unsupported type.")
        if _public_der(private_key.public_key()) != _public_der(certificate.public_key()):
            raise CAKeyError(
                f"The CA key {self.key_path} does not belong to the certificate {self.certificate_path}."
            )
        return CertificateAuthority(certificate=certificate, private_key=private_key)


def _public_der(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def keystore() -> FileKeyStore:
    return FileKeyStore(settings.CA_ROOT_PATH, settings.CA_KEY_PASSPHRASE)


_cache_lock = threading.Lock()
_cache: dict[Path, CertificateAuthority] = {}


def get_ca() -> CertificateAuthority:
    """The CA of this process, loaded on first use and kept (not reloaded per request)."""
    root = settings.CA_ROOT_PATH
    authority = _cache.get(root)
    if authority is None:
        with _cache_lock:
            authority = _cache.get(root)
            if authority is None:
                authority = keystore().load()
                _cache[root] = authority
    return authority


def forget_loaded_ca() -> None:
    """Drop the cached CA (after the CA is created, and between tests)."""
    with _cache_lock:
        _cache.clear()
