"""Assertion helpers and real-tool runners shared by the suite."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from tests.support import ROOT

BIN = Path(sys.executable).parent


def assert_signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> None:
    """The certificate's signature verifies with the issuer's key and names the issuer."""
    assert certificate.issuer == issuer.subject
    public_key = issuer.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(
            certificate.signature,
            certificate.tbs_certificate_bytes,
            padding.PKCS1v15(),
            certificate.signature_hash_algorithm,  # type: ignore[arg-type]
        )
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(
            certificate.signature,
            certificate.tbs_certificate_bytes,
            ec.ECDSA(certificate.signature_hash_algorithm),  # type: ignore[arg-type]
        )


def assert_crl_contains(crl: x509.CertificateRevocationList, serials: Iterable[int]) -> None:
    """Exactly these serials, no more and no fewer, are on the CRL."""
    assert sorted(entry.serial_number for entry in crl) == sorted(serials)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def run_tool(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, check=check, timeout=120
    )


def lint_certificate_file(path: Path) -> subprocess.CompletedProcess[str]:
    """pkilint's own command line, as an auditor would run it."""
    return run_tool(BIN / "lint_pkix_cert", "lint", "-s", "WARNING", path)


def lint_crl_file(path: Path) -> subprocess.CompletedProcess[str]:
    return run_tool(BIN / "lint_crl", "lint", "-t", "CRL", "-p", "PKIX", path)


def openssl_verify(
    ca_file: Path, certificate_file: Path, *extra: str | Path
) -> subprocess.CompletedProcess[str]:
    return run_tool("openssl", "verify", *extra, "-CAfile", ca_file, certificate_file)


def open_bundle(client: object, answer: dict[str, str]) -> dict[str, bytes]:
    """Download the bundle an API answer links to (once) and open it with its password."""
    import io
    from urllib.parse import urlsplit

    import pyzipper

    response = client.get(urlsplit(answer["download_url"]).path)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/zip"
    with pyzipper.AESZipFile(io.BytesIO(response.content)) as archive:
        archive.setpassword(answer["bundle_password"].encode())
        return {name: archive.read(name) for name in archive.namelist()}


def subprocess_database_url() -> str:
    """DATABASE_URL naming the database this test run uses, for a manage.py or worker subprocess
    (SQLite's file or PostgreSQL's test_<name>); only committed rows are visible there."""
    from urllib.parse import quote

    from django.db import connection

    database = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{database['NAME']}"
    credentials = quote(database["USER"] or "", safe="")
    if database["PASSWORD"]:
        credentials += ":" + quote(database["PASSWORD"], safe="")
    host = database["HOST"] or "127.0.0.1"
    return f"postgres://{credentials}@{host}:{database['PORT'] or 5432}/{database['NAME']}"


@contextlib.contextmanager
def lock_held_elsewhere(name: str) -> Iterator[None]:
    """The lock `name` held by another thread (its own database connection, its own lock file
    handle), as another process would hold it (stuck, or still at work), for the block."""
    import threading

    from django.db import connection

    from kernel.locks import exclusive_lock

    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with exclusive_lock(name):
                taken.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join(10)


def superuser_token(username: str) -> str:
    """A committed superuser and a real API token for it, for a client in another process."""
    from django.contrib.auth.models import User

    from accounts.services import create_api_token

    user = User.objects.create_superuser(username, password="a-long-test-password")
    return create_api_token(user).value


def make_csr(key: Any, common_name: str = "anything the device likes") -> bytes:
    """A PEM CSR signed by `key` (SHA-256; none for Ed25519, which takes no hash)."""
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, algorithm)
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1 (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def openssl_csr(directory: Path, name: str, options: list[str]) -> str:
    """A CSR made by `openssl req` with `options` (and a new key), as a device's tooling would."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr = directory / f"{name}.key", directory / f"{name}.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-nodes", "-subj", "/CN=device", "-keyout", str(key), "-out", str(csr),
         *options],
        check=True, capture_output=True,
    )  # fmt: skip
    return csr.read_text()


# What the settings read from the environment: a new process of the tests' own starts without them.
SETTINGS_VARIABLES = {
    "DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "CA_KEY_PASSPHRASE", "CA_KEY_PASSPHRASE_FILE",
    "DATA_DIR", "CA_ROOT_PATH", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "ALLOWED_HOSTS",
    "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
}  # fmt: skip


def without_settings_variables() -> dict[str, str]:
    """This process's environment less SETTINGS_VARIABLES."""
    return {key: value for key, value in os.environ.items() if key not in SETTINGS_VARIABLES}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`manage.py` in a new process with exactly the settings variables in `env`."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**without_settings_variables(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def manage_shell(code: str, env: dict[str, str]) -> str:
    """What `code` prints, run by `manage.py shell` in a new process with the settings in `env`."""
    result = manage("shell", "--no-imports", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """What `call` returns, and the seconds it took."""
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started
