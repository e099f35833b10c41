"""Schemathesis hooks (loaded by the CLI through SCHEMATHESIS_HOOKS, imported by the in-process
test) for the two things a schema cannot say:

- `pem-csr`: the schema's pattern gives a CSR's shape, but only a real self-signed PKCS#10
  request is valid, so schema-valid requests get real CSRs;
- `pem-ca-certificate`: likewise, only a real CA certificate is a valid enrolment group CA, so
  schema-valid requests get real ones (each one new: a CA belongs to one group only);
- `Idempotency-Key`: a key names one request. Generated examples reuse a valid key for different
  bodies, which the API rightly refuses (422, as the IETF Idempotency-Key draft says); a client
  uses one key per request, so each valid key is made unique. Reuse is tested in test_api_devices.
"""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

import schemathesis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import strategies

IDEMPOTENCY_HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"[\x21-\x7e]{16,255}")


def _csr(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


CSR_POOL = [_csr(f"pool-{index}") for index in range(8)]
schemathesis.openapi.format("pem-csr", strategies.sampled_from(CSR_POOL))


def _ca_certificate(_: object) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Manufacturer CA {uuid.uuid4()}")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


schemathesis.openapi.format("pem-ca-certificate", strategies.integers().map(_ca_certificate))


def make_idempotency_key_unique(headers: dict[str, Any] | None) -> None:
    key = (headers or {}).get(IDEMPOTENCY_HEADER)
    if headers is not None and isinstance(key, str) and _VALID_KEY.fullmatch(key):
        headers[IDEMPOTENCY_HEADER] = f"{key[:200]}-{uuid.uuid4()}"


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    make_idempotency_key_unique(case.headers)
