"""Device CSRs: the policy a PKCS#10 request must meet before the CA signs anything for it.

A pure part of `pki`, like `pki.profiles`: bytes in, a checked public key out, or an error the
device's operator can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import SignatureAlgorithmOID

from pki.errors import (
    CSRKeyNotAllowed,
    CSRKeyTypeNotAllowed,
    CSRSignatureAlgorithmNotAllowed,
    CSRSignatureInvalid,
    InvalidCSR,
)
from pki.profiles import KeyType, PublicKey

# A device CSR larger than this is not a CSR (an RSA-4096 CSR is about 1.7 kB of PEM).
MAX_CSR_BYTES = 16 * 1024
# What a device CSR may be signed with: SHA-2 with PKCS#1 v1.5 or ECDSA. SHA-1 and MD5
# collisions are practical (SHAttered, 2017), so such a signature proves nothing.
CSR_SIGNATURE_ALGORITHMS = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)

# One PEM-encoded PKCS#10 request (RFC 7468 section 7: base64 lines between the BEGIN and END
# lines), with white space around it and CRLF or LF line ends, and nothing else: no explanatory
# text, no headers. Written so that Python's `re` and ECMA-262 (the OpenAPI schema's pattern
# dialect) read it alike; the API documents it, and `parse_csr` refuses what does not match.
PEM_CSR_PATTERN = (
    r"^[\t\n\r ]*-----BEGIN CERTIFICATE REQUEST-----[\t ]*\r?\n"
    r"(?:[A-Za-z0-9+/=]+[\t ]*\r?\n)+"
    r"-----END CERTIFICATE REQUEST-----[\t\n\r ]*$"
)
_PEM_CSR = re.compile(PEM_CSR_PATTERN)


@dataclass(frozen=True)
class ParsedCSR:
    public_key: PublicKey
    key_type: KeyType


def _signature_digest_name(csr: x509.CertificateSigningRequest) -> str:
    """The digest a CSR is signed with, as people name it (SHA-1, MD5), else the algorithm's OID."""
    try:
        digest = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    if isinstance(digest, hashes.SHA1):
        return "SHA-1"
    if isinstance(digest, hashes.MD5):
        return "MD5"
    if digest is not None:
        return digest.name.upper()
    return f"the algorithm {csr.signature_algorithm_oid.dotted_string}"


def parse_csr(pem: str | bytes) -> ParsedCSR:
    """Validate a device's CSR: PEM, self-signature, key on the allow-list.

    The subject is ignored on purpose: the CA names the device (CN = device id), so a device
    cannot ask for another device's identity.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > MAX_CSR_BYTES:
        raise InvalidCSR(f"The CSR is {len(data)} bytes; a device CSR is at most {MAX_CSR_BYTES} bytes.")
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in data:
        raise InvalidCSR("The CSR is not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----).")
    if not data.isascii() or not _PEM_CSR.fullmatch(data.decode("ascii")):
        raise InvalidCSR(
            "The CSR must be one PEM block (-----BEGIN CERTIFICATE REQUEST-----, base64 lines, "
            "-----END CERTIFICATE REQUEST-----) with nothing else around it but white space."
        )
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        raise InvalidCSR("The CSR could not be parsed: its PEM or DER structure is damaged.") from None
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError):
        raise CSRKeyNotAllowed(
            "The CSR's public key could not be read or uses an unsupported algorithm."
        ) from None
    # cryptography reads an id-RSASSA-PSS key (RFC 4055) as a plain RSA key, and a certificate
    # made from it would say rsaEncryption: the device asked for a PSS-only key and would get
    # one that may sign anything. So the key the certificate would carry must be, byte for byte,
    # the one requested; and a PSS-signed request is refused the same way (this CA issues
    # rsaEncryption and EC keys only).
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if (
        spki not in csr.tbs_certrequest_bytes
        or csr.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    ):
        raise CSRKeyTypeNotAllowed(
            "RSA-PSS CSRs are not accepted (a PSS-only key, or a PSS signature): make the key "
            "with RSA (rsaEncryption) or EC P-256 and sign the CSR with SHA-256 (PKCS#1 v1.5 or ECDSA)."
        )
    key_type = KeyType.of(public_key)  # refuses every key type (and RSA exponent) off the allow-list
    if csr.signature_algorithm_oid not in CSR_SIGNATURE_ALGORITHMS:
        raise CSRSignatureAlgorithmNotAllowed(
            f"The CSR is signed with {_signature_digest_name(csr)}, which is not accepted (SHA-1 and MD5 "
            "never are): sign it with SHA-256 (openssl req -sha256)."
        )
    try:
        signature_ok = csr.is_signature_valid
    except Exception:  # noqa: BLE001 - cryptography raises several types for exotic algorithms
        signature_ok = False
    if not signature_ok:
        raise CSRSignatureInvalid(
            "The CSR's signature does not match its public key (proof of possession failed)."
        )
    return ParsedCSR(public_key=cast(PublicKey, public_key), key_type=key_type)
