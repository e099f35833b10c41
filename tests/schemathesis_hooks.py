"""Schemathesis hooks (loaded by the CLI through SCHEMATHESIS_HOOKS, imported by the in-process
test) for the two things a schema cannot say:

- `pem-csr`: the schema's pattern gives a CSR's shape, but only a real self-signed PKCS#10
  request is valid, so schema-valid requests get real CSRs;
- `Idempotency-Key`: a key names one request. Generated examples reuse a valid key for different
  bodies, which the API rightly refuses (422, as the IETF Idempotency-Key draft says); a client
  uses one key per request, so each valid key is made unique. Reuse is tested in test_api_devices.
"""

from __future__ import annotations

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


def make_idempotency_key_unique(headers: dict[str, Any] | None) -> None:
    key = (headers or {}).get(IDEMPOTENCY_HEADER)
    if headers is not None and isinstance(key, str) and _VALID_KEY.fullmatch(key):
        headers[IDEMPOTENCY_HEADER] = f"{key[:200]}-{uuid.uuid4()}"


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    make_idempotency_key_unique(case.headers)
