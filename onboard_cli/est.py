"""The device side of EST (RFC 7030): a key and CSR made here, the request over TLS with the CA
pinned, the answer's certificate read from its certs-only PKCS#7, and the new credentials written
in place of the old ones.

A client of the portal like the rest of `onboard_cli`: it imports nothing of the server. The
private key never leaves this machine; only the CSR (public key, signed by it) is sent.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from onboard_cli import vocabulary
from onboard_cli.client import CliError, ServerError, Unreachable

WELL_KNOWN = "/.well-known/est"
PKCS10 = "application/pkcs10"
DEFAULT_TIMEOUT = 60.0
#: The portal's default RENEWAL_WINDOW_PERCENT: renew in the last third of the lifetime.
DEFAULT_WINDOW_PERCENT = 33

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_private_key(key_type: str = vocabulary.EC_P256) -> PrivateKey:
    """A fresh key of one of the portal's key types, made on this machine."""
    if key_type == vocabulary.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    bits = {vocabulary.RSA2048: 2048, vocabulary.RSA3072: 3072}[key_type]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def csr_der(key: PrivateKey, common_name: str) -> bytes:
    """A PKCS#10 request for `key`, signed with SHA-256. The portal sets the subject itself; the
    CN here only names the request for a person reading it."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def renewal_opens_at(
    certificate: x509.Certificate, window_percent: int = DEFAULT_WINDOW_PERCENT
) -> dt.datetime:
    """When the portal lets this certificate renew: `window_percent` of its lifetime before notAfter."""
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return not_after - (not_after - not_before) * (window_percent / 100)


def renewal_due(
    certificate: x509.Certificate,
    window_percent: int = DEFAULT_WINDOW_PERCENT,
    now: dt.datetime | None = None,
) -> bool:
    return (now or dt.datetime.now(dt.UTC)) >= renewal_opens_at(certificate, window_percent)


def certificates_from_pkcs7(body: bytes) -> list[x509.Certificate]:
    """RFC 7030 4.1.3, 4.2.3: a base64-encoded DER certs-only PKCS#7."""
    try:
        return pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(body.split())))
    except ValueError:
        raise CliError("The portal's answer is not a certs-only PKCS#7 (base64 DER).") from None


@dataclass(frozen=True)
class TLSIdentity:
    """The CA the portal's certificate must chain to, and the client certificate and key shown."""

    ca_file: Path
    certificate_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        # Pinned: only the given CA is trusted for the portal, not the system's store.
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.certificate_file is not None:
            context.load_cert_chain(str(self.certificate_file), str(self.key_file) if self.key_file else None)
        return context


class EstClient:
    """RFC 7030 operations against one portal, over TLS with the CA pinned."""

    def __init__(self, url: str, identity: TLSIdentity, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        try:
            context = identity.context()
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"Cannot use the TLS files: {exc}", exit_code=2) from None
        self._http = httpx.Client(
            base_url=self.url + WELL_KNOWN,
            verify=context,
            timeout=timeout,
            headers={"Accept": "application/json", "User-Agent": "onboard-cli"},
        )

    def __enter__(self) -> EstClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _post_csr(self, operation: str, csr: bytes, **kwargs: Any) -> x509.Certificate:
        try:
            response = self._http.post(
                f"/{operation}",
                content=base64.encodebytes(csr),
                headers={"Content-Type": PKCS10, "Content-Transfer-Encoding": "base64"},
                **kwargs,
            )
        except httpx.TransportError as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from None
        if response.status_code != 200:
            raise _error(response)
        certificates = certificates_from_pkcs7(response.content)
        if not certificates:
            raise CliError("The portal answered with no certificate.")
        return certificates[0]

    def simplereenroll(self, csr: bytes) -> x509.Certificate:
        """RFC 7030 4.2.2: renew with the client certificate this client was made with."""
        return self._post_csr("simplereenroll", csr)


def _error(response: httpx.Response) -> CliError:
    try:
        payload = response.json()
        error = payload["error"]
        return ServerError(response.status_code, error["code"], error["message"], payload)
    except (ValueError, KeyError, TypeError):
        text = response.text.strip() or response.reason_phrase
        return ServerError(response.status_code, "http_error", text, {})


def replace_credentials(
    certificate_file: Path, key_file: Path, certificate: x509.Certificate, key: PrivateKey
) -> None:
    """Write the new certificate and key in place of the old ones, which are kept as .bak.

    Each file is written to a temporary file in the same directory, flushed, then renamed over
    the old one (atomic on POSIX): a reader sees the old file or the new one, never half. The key
    is written first; if the machine stops between the two renames, the .bak files hold the
    pair that still matches.
    """
    for path in (certificate_file, key_file):
        if path.exists():
            shutil.copy2(path, path.with_name(path.name + ".bak"))
            os.chmod(path.with_name(path.name + ".bak"), 0o600 if path == key_file else 0o644)
    _write_atomically(key_file, key_pem(key), 0o600)
    _write_atomically(certificate_file, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class RenewResult:
    renewed: bool
    certificate: x509.Certificate
    opens_at: dt.datetime


def renew(
    url: str,
    certificate_file: Path,
    key_file: Path,
    ca_file: Path,
    *,
    only_if_due: bool = False,
    window_percent: int = DEFAULT_WINDOW_PERCENT,
    key_type: str | None = None,
) -> RenewResult:
    """Renew the device's certificate with EST simplereenroll; with `only_if_due`, nothing is
    sent before the renewal window opens (for a cron job or a systemd timer)."""
    try:
        current = x509.load_pem_x509_certificate(certificate_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise CliError(f"Cannot read the certificate {certificate_file}: {exc}", exit_code=2) from None
    opens_at = renewal_opens_at(current, window_percent)
    if only_if_due and not renewal_due(current, window_percent):
        return RenewResult(renewed=False, certificate=current, opens_at=opens_at)
    key = new_private_key(key_type or _key_type_of(current))
    common_name = current.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    csr = csr_der(key, str(common_name[0].value) if common_name else "device")
    with EstClient(url, TLSIdentity(ca_file, certificate_file, key_file)) as client:
        renewed = client.simplereenroll(csr)
    if renewed.public_key() != key.public_key():
        raise CliError("The portal's certificate is not for the key this client made; nothing was written.")
    replace_credentials(certificate_file, key_file, renewed, key)
    return RenewResult(renewed=True, certificate=renewed, opens_at=renewal_opens_at(renewed, window_percent))


def _key_type_of(certificate: x509.Certificate) -> str:
    """The same key type as now: RSA of the same size, else EC P-256."""
    public_key = certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        return vocabulary.RSA3072 if public_key.key_size >= 3072 else vocabulary.RSA2048
    return vocabulary.EC_P256
