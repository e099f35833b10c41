"""`Idempotency-Key` support: a retried request gets the first answer instead of a second device.

The stored answer may hold secrets (a bundle password, a download link), so it is encrypted
with AES-256-GCM under a key derived (HKDF) from the Idempotency-Key, which itself is stored
only as an HMAC digest. Reading the database is not enough to read an answer; retrying with
the key is. The key is claimed (a committed row) before any work, so of two concurrent
requests with one key only one registers anything; the other is told to retry (409) and then
gets the stored answer.

A claim is alive exactly as long as the request that holds it: that request holds the lock
`claim_lock_name(...)` (an advisory lock on PostgreSQL, an flock on SQLite), which the database
or the kernel frees when its process dies, even by SIGKILL. A retry that finds a pending claim
with its lock free takes it over at once; one that finds the lock held gets 409 (never two
requests at work on one key). The answer is stored in the same transaction as the registration
(`Claim.keep`, called by the service inside its transaction), so a process that dies either
committed both the device and its answer, which the retry replays, or neither, so taking the
claim over cannot register a device twice.
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
from kernel.errors import ServiceError
from kernel.locks import forget_lock, lock_if_free

HEADER = "Idempotency-Key"
# Keys must carry enough entropy that the stored answer cannot be decrypted by guessing them.
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 255
RETENTION = dt.timedelta(hours=24)
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


def claim_lock_name(key_digest: str) -> str:
    """The lock the request holding this claim holds for as long as it runs."""
    return f"idempotency-{key_digest[:32]}"


class Claim:
    """What a request's work gets: `keep(response)` stores the answer, to be called inside the
    transaction that makes the change, so the change and its answer commit together."""

    def __init__(self, record: IdempotentRequest | None = None, key: str = "") -> None:
        self._record = record
        self._key = key
        self.kept = False

    def keep(self, response: Response) -> Response:
        record = self._record
        if record is None or not 200 <= response.status_code < 300:
            return response
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(response.data, default=str).encode()
        record.status_code = response.status_code
        record.encrypted_response = nonce + _cipher(self._key).encrypt(
            nonce, plain, record.key_digest.encode()
        )
        record.save(update_fields=["status_code", "encrypted_response"])
        self.kept = True
        return response

    def withdraw(self) -> None:
        """The change this answer was kept for was undone after its commit (a task queue that
        could not be reached): the answer goes too, so that a retry registers again instead of
        replaying an answer about a device that no longer exists."""
        record = self._record
        if record is None or not self.kept:
            return
        IdempotentRequest.objects.filter(pk=record.pk).update(status_code=PENDING, encrypted_response=b"")
        record.status_code = PENDING
        self.kept = False


#: The work of a request sent without an Idempotency-Key: nothing to keep.
NO_CLAIM = Claim()


def run_once(request: Request, work: Callable[[Claim], Response]) -> Response:
    key = request.headers.get(HEADER)
    if key is None:
        return work(NO_CLAIM)
    if not (MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH) or not all("!" <= char <= "~" for char in key):
        raise InvalidIdempotencyKey(
            f"{HEADER} must be {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} visible ASCII characters (a UUID works)."
        )
    key_digest = _key_digest(request.user.pk, key)
    request_digest = _request_digest(request.data)
    IdempotentRequest.objects.filter(created_at__lt=timezone.now() - RETENTION).delete()
    lock = claim_lock_name(key_digest)
    with lock_if_free(lock) as ours:
        record = IdempotentRequest.objects.filter(key_digest=key_digest).first()
        if record is not None and record.status_code != PENDING:
            return _replay(record, key, request_digest)
        if not ours:
            # A live request holds this key: never a second one at work on it.
            if record is not None and not hmac.compare_digest(record.request_digest, request_digest):
                raise IdempotencyKeyReused(
                    f"This {HEADER} is in use for a different request; use a new key for a new request."
                )
            raise IdempotentRequestInProgress(
                f"A request with this {HEADER} is still being handled; retry in a few seconds."
            )
        record = _claim(record, key_digest, request_digest)
        claim = Claim(record, key)
        # Once the key's state is final (an answer kept, or no claim left for it) its lock file
        # (SQLite) goes, refused requests' too: one file per key would otherwise stay behind.
        try:
            response = work(claim)
        except BaseException:
            _release(record)
            forget_lock(lock)
            raise
        if not 200 <= response.status_code < 300:
            _release(record)
        elif not claim.kept:
            claim.keep(response)
        forget_lock(lock)
        return response


def _claim(record: IdempotentRequest | None, key_digest: str, request_digest: str) -> IdempotentRequest:
    """The committed claim of the key, made now or taken over from a request that died (its
    lock was free, so it is not running; its transaction, and any device, rolled back with it)."""
    if record is not None:
        record.request_digest = request_digest
        record.save(update_fields=["request_digest"])
        return record
    try:
        with transaction.atomic():
            return IdempotentRequest.objects.create(
                key_digest=key_digest,
                request_digest=request_digest,
                status_code=PENDING,
                encrypted_response=b"",
            )
    except IntegrityError:
        # Only a process that claims without the lock (code from before it) can get here.
        raise IdempotentRequestInProgress(
            f"A request with this {HEADER} is still being handled; retry in a few seconds."
        ) from None


def _release(record: IdempotentRequest) -> None:
    """The work failed: free the key for a retry, unless its answer was committed after all."""
    IdempotentRequest.objects.filter(pk=record.pk, status_code=PENDING).delete()
