"""AES-256-GCM with a fresh random key per secret, for secrets the portal shows once.

The server keeps the ciphertext and gives the key to the browser (an HttpOnly cookie), or the
other way round; neither half alone reveals anything, and the server-side half is deleted
when the secret has been shown. Unlike `kernel.sealing`, the key is not derived from
SECRET_KEY: a stolen database plus SECRET_KEY still opens nothing.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.http import HttpResponse

from kernel.sealing import Unreadable, decrypt, encrypt

__all__ = ["Unreadable", "decode_key", "decrypt", "encode_key", "encrypt", "give_key", "new_key"]

KEY_BYTES = 32


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def decode_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise Unreadable("malformed key") from None
    if len(key) != KEY_BYTES:
        raise Unreadable("malformed key")
    return key


def give_key(response: HttpResponse, name: str, key: bytes, *, max_age: int, path: str) -> None:
    """Hand the browser its half: an HttpOnly, SameSite=Strict cookie, only for `path`."""
    response.set_cookie(
        name,
        encode_key(key),
        max_age=max_age,
        path=path,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Strict",
    )
