"""`Idempotency-Key` support: a retried request gets the first answer instead of a second device.

The stored answer may hold secrets (a bundle password, a download link), so it is encrypted
with AES-256-GCM under a key derived (HKDF) from the Idempotency-Key, which itself is stored
only as an HMAC digest. Reading the database is not enough to read an answer; retrying with
the key is. The key is claimed (a committed row) before any work, so of two concurrent
requests with one key only one registers anything; the other is told to retry (409) and then
gets the stored answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from devices.models import IdempotentRequest
from onboarding.errors import ServiceError

HEADER = "Idempotency-Key"
# Keys must carry enough entropy that the stored answer cannot be decrypted by guessing them.
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 255
RETENTION = dt.timedelta(hours=24)
ABANDONED_AFTER = dt.timedelta(minutes=10)
PENDING = 0  # status_code of a claimed key whose request is still being handled
NONCE_BYTES = 12


class InvalidIdempotencyKey(ServiceError):
    code = "invalid_idempotency_key"
    status = 400


class IdempotentRequestInProgress(ServiceError):
    code = "request_in_progress"
    status = 409


class IdempotencyKeyReused(ServiceError):
    code = "idempotency_key_reused"
    status = 422


def _pepper(purpose: bytes) -> bytes:
    return hashlib.sha256(purpose + settings.SECRET_KEY.encode()).digest()


def _key_digest(user_id: Any, key: str) -> str:
    return hmac.new(_pepper(b"idempotency-digest:"), f"{user_id}:{key}".encode(), hashlib.sha256).hexdigest()


def _cipher(key: str) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_pepper(b"idempotency-salt:"), info=b"answer"
    ).derive(key.encode())
    return AESGCM(derived)


def _request_digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _replay(record: IdempotentRequest, key: str, request_digest: str) -> Response:
    if not hmac.compare_digest(record.request_digest, request_digest):
        raise IdempotencyKeyReused(
            f"This {HEADER} was used for a different request; use a new key for a new request."
        )
    blob = bytes(record.encrypted_response)
    plain = _cipher(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], record.key_digest.encode())
    response = Response(json.loads(plain), status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def run_once(request: Request, work: Callable[[], Response]) -> Response:
    key = request.headers.get(HEADER)
    if key is None:
        return work()
    if not (MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH) or not all("!" <= char <= "~" for char in key):
        raise InvalidIdempotencyKey(
            f"{HEADER} must be {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} visible ASCII characters (a UUID works)."
        )
    key_digest = _key_digest(request.user.pk, key)
    request_digest = _request_digest(request.data)
    now = timezone.now()
    IdempotentRequest.objects.filter(created_at__lt=now - RETENTION).delete()
    # An in-flight claim older than this is taken as abandoned (its process died).
    IdempotentRequest.objects.filter(status_code=PENDING, created_at__lt=now - ABANDONED_AFTER).delete()
    # Claim the key before any work: of two concurrent requests with one key, only one signs
    # anything; the other sees the claim (or, later, the stored answer).
    try:
        with transaction.atomic():
            claim = IdempotentRequest.objects.create(
                key_digest=key_digest,
                request_digest=request_digest,
                status_code=PENDING,
                encrypted_response=b"",
            )
    except IntegrityError:
        existing = IdempotentRequest.objects.filter(key_digest=key_digest).first()
        if existing is None:
            raise
        if existing.status_code == PENDING:
            if not hmac.compare_digest(existing.request_digest, request_digest):
                raise IdempotencyKeyReused(
                    f"This {HEADER} is in use for a different request; use a new key for a new request."
                ) from None
            raise IdempotentRequestInProgress(
                f"A request with this {HEADER} is still being handled; retry in a few seconds."
            ) from None
        return _replay(existing, key, request_digest)
    try:
        response = work()
    except BaseException:
        claim.delete()
        raise
    if not 200 <= response.status_code < 300:
        claim.delete()
        return response
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps(response.data, default=str).encode()
    claim.status_code = response.status_code
    claim.encrypted_response = nonce + _cipher(key).encrypt(nonce, plain, key_digest.encode())
    claim.save(update_fields=["status_code", "encrypted_response"])
    return response
