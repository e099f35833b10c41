"""A manufacturer's PKI for enrolment tests: a CA and the factory certificates (IDevIDs) it signs,
made with cryptography (EC P-256 keeps them fast) or with the `openssl` command line."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.profiles import key_usage

NOW = dt.datetime.now(dt.UTC)


def _name(common_name: str, serial_number: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Sensors")]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    if serial_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    return x509.Name(attributes)


CA_USAGE = key_usage(key_cert_sign=True, crl_sign=True)
DEVICE_USAGE = key_usage(digital_signature=True)


@dataclass
class Issuer:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(
    common_name: str = "Acme Manufacturing CA",
    *,
    parent: Issuer | None = None,
    is_ca: bool = True,
    days: int = 3650,
    key_usage: x509.KeyUsage | None = CA_USAGE,
) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    issuer_name = parent.certificate.subject if parent else subject
    signing_key = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False
        )
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return Issuer(builder.sign(signing_key, hashes.SHA256()), key)


def make_factory_certificate(
    issuer: Issuer,
    hardware_id: str | None = "ACME-0001",
    *,
    common_name: str = "acme-sensor",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    client_auth: bool = True,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, hardware_id))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=7300))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(DEVICE_USAGE, critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    )
    if not client_auth:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer.key, hashes.SHA256())


@dataclass
class OpensslPKI:
    ca_pem: str
    device: x509.Certificate


def openssl_manufacturer(directory: Path, hardware_id: str) -> OpensslPKI:
    """A manufacturer CA and one factory certificate made by the `openssl` command line, as a
    factory line's own tooling would: interoperability, not only cryptography talking to itself."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.cnf").write_text(
        "[req]\ndistinguished_name=dn\n[dn]\n"
        "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
        "[device]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\nauthorityKeyIdentifier=keyid\n"
    )
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    openssl(
        "req", "-new", "-x509", "-key", "ca.key", "-out", "ca.pem", "-days", "3650",
        "-subj", "/O=Openssl Devices/CN=Openssl Manufacturing CA",
        "-config", "ca.cnf", "-extensions", "ca",
    )  # fmt: skip
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "device.key")
    openssl(
        "req", "-new", "-key", "device.key", "-out", "device.csr", "-config", "ca.cnf",
        "-subj", f"/O=Openssl Devices/CN=gateway/serialNumber={hardware_id}",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "device.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "device.pem", "-days", "365", "-extfile", "ca.cnf", "-extensions", "device",
    )  # fmt: skip
    return OpensslPKI(
        ca_pem=(directory / "ca.pem").read_text(),
        device=x509.load_pem_x509_certificate((directory / "device.pem").read_bytes()),
    )
