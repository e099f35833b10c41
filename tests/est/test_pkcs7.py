"""pki.pkcs7 and pki.csrattrs: what EST answers, read back by OpenSSL and by pyasn1/cryptography."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import SignatureAlgorithmOID
from pyasn1.codec.der import decoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc7030

from pki.csrattrs import allowed_csr_attributes, csr_attributes_der
from pki.keystore import CertificateAuthority
from pki.pkcs7 import base64_body, certs_only_base64, certs_only_der
from pki.profiles import KeyType


def test_certs_only_pkcs7_reads_back_in_openssl_and_cryptography(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    body = certs_only_base64([ca.certificate])
    der = base64.b64decode(body)
    assert pkcs7.load_der_pkcs7_certificates(der) == [ca.certificate]
    (tmp_path / "cacerts.p7").write_bytes(der)
    printed = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-in", str(tmp_path / "cacerts.p7"), "-print_certs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert x509.load_pem_x509_certificates(printed.encode()) == [ca.certificate]
    assert "subject=CN = Test Session CA" in printed.replace("subject=CN=", "subject=CN = ")


def test_base64_body_is_rfc_2045_lines() -> None:
    body = base64_body(bytes(range(256)) * 4)
    lines = body.splitlines()
    assert all(len(line) <= 76 for line in lines) and len(lines) > 1
    assert base64.b64decode(body) == bytes(range(256)) * 4


def test_certs_only_needs_a_certificate() -> None:
    with pytest.raises(ValueError):
        certs_only_der([])


def _decoded(der: bytes) -> list[tuple[str, list[int | str]]]:
    answer, rest = decoder.decode(der, asn1Spec=rfc7030.CsrAttrs())
    assert rest == b""
    entries: list[tuple[str, list[int | str]]] = []
    for item in answer:
        if item.getName() == "oid":
            entries.append((str(item["oid"]), []))
        else:
            attribute = item["attribute"]
            values: list[int | str] = []
            for value in attribute["attrValues"]:
                decoded, _ = decoder.decode(bytes(value))
                values.append(int(decoded) if isinstance(decoded, univ.Integer) else str(decoded))
            entries.append((str(attribute["attrType"]), values))
    return entries


def test_csr_attributes_name_every_key_type_the_csr_policy_accepts() -> None:
    entries = _decoded(allowed_csr_attributes())
    # RFC 7030 4.5.2: id-ecPublicKey with the curve; RFC 9908: rsaEncryption with the sizes.
    assert entries[0] == ("1.2.840.10045.2.1", ["1.2.840.10045.3.1.7"])
    assert entries[1] == ("1.2.840.113549.1.1.1", [2048, 3072])
    signature_oids = {oid for oid, values in entries[2:] if not values}
    assert SignatureAlgorithmOID.ECDSA_WITH_SHA256.dotted_string in signature_oids
    assert SignatureAlgorithmOID.RSA_WITH_SHA256.dotted_string in signature_oids
    assert SignatureAlgorithmOID.RSA_WITH_SHA1.dotted_string not in signature_oids


def test_csr_attributes_follow_the_key_types_given(tmp_path: Path) -> None:
    der = csr_attributes_der([KeyType.EC_P256], [SignatureAlgorithmOID.ECDSA_WITH_SHA256])
    assert _decoded(der) == [("1.2.840.10045.2.1", ["1.2.840.10045.3.1.7"]), ("1.2.840.10045.4.3.2", [])]
    (tmp_path / "csrattrs.der").write_bytes(der)
    parsed = subprocess.run(
        ["openssl", "asn1parse", "-inform", "DER", "-in", str(tmp_path / "csrattrs.der")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "id-ecPublicKey" in parsed and "prime256v1" in parsed and "ecdsa-with-SHA256" in parsed
