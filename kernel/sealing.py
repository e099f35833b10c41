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

from kernel.errors import ServiceError

NONCE_BYTES = 12
VERSION = b"v1:"


class SealBroken(ServiceError):
    code = "sealed_payload_invalid"
    status = 500


class Unreadable(Exception):
    """Wrong key, altered ciphertext, or the two halves do not belong together."""


def encrypt(key: bytes, plain: bytes, bound_to: str) -> bytes:
    """AES-256-GCM: a random nonce, then the ciphertext; `bound_to` is the associated data."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plain, bound_to.encode())


def decrypt(key: bytes, blob: bytes, bound_to: str) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], bound_to.encode())
    except (InvalidTag, ValueError) as exc:
        raise Unreadable(str(exc) or "the ciphertext does not open with this key") from None


def _derived_key(purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"onboarding-sealing", info=purpose.encode()
    ).derive(settings.SECRET_KEY.encode())


def seal(purpose: str, bound_to: str, value: dict[str, Any]) -> str:
    """The value as a printable token only holders of SECRET_KEY can open."""
    plain = json.dumps(value, separators=(",", ":")).encode()
    sealed = encrypt(_derived_key(purpose), plain, VERSION.decode() + bound_to)
    return base64.urlsafe_b64encode(sealed).decode()


def unseal(purpose: str, bound_to: str, token: str) -> dict[str, Any]:
    try:
        blob = base64.urlsafe_b64decode(token.encode())
        plain = decrypt(_derived_key(purpose), blob, VERSION.decode() + bound_to)
    except (Unreadable, ValueError):
        # A different SECRET_KEY on the worker is the usual cause.
        raise SealBroken(
            f"A sealed {purpose} value could not be opened: the web and worker processes must share "
            "SECRET_KEY."
        ) from None
    value: dict[str, Any] = json.loads(plain)
    return value
