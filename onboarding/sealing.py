"""Secrets that must travel through a queue travel sealed.

A task message sits in Redis (and in its persistence files, and in a worker's logs when a task
fails) for as long as the queue holds it. A bundle password must not be readable there, so it
is sealed with AES-256-GCM under a key derived (HKDF) from SECRET_KEY, which the web processes
and the workers share and Redis never sees. The associated data binds a sealed value to one
purpose and one object: a password sealed for device A cannot be replayed in a message for
device B.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from onboarding.errors import ServiceError

NONCE_BYTES = 12
VERSION = b"v1:"


class SealBroken(ServiceError):
    code = "sealed_payload_invalid"
    status = 500


def _cipher(purpose: str) -> AESGCM:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"onboarding-sealing", info=purpose.encode()
    ).derive(settings.SECRET_KEY.encode())
    return AESGCM(key)


def seal(purpose: str, bound_to: str, value: dict[str, Any]) -> str:
    """The value as a printable token only holders of SECRET_KEY can open."""
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps(value, separators=(",", ":")).encode()
    sealed = nonce + _cipher(purpose).encrypt(nonce, plain, VERSION + bound_to.encode())
    return base64.urlsafe_b64encode(sealed).decode()


def unseal(purpose: str, bound_to: str, token: str) -> dict[str, Any]:
    try:
        blob = base64.urlsafe_b64decode(token.encode())
        plain = _cipher(purpose).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], VERSION + bound_to.encode())
    except (InvalidTag, ValueError):
        # A different SECRET_KEY on the worker is the usual cause.
        raise SealBroken(
            f"A sealed {purpose} value could not be opened: the web and worker processes must share "
            "SECRET_KEY."
        ) from None
    value: dict[str, Any] = json.loads(plain)
    return value
