"""Locks that hold across processes and machines, for writers that must run one at a time.

On PostgreSQL an advisory lock serialises every web and worker process sharing the
database; on SQLite (one machine by nature) an flock on a file in LOCK_DIR does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
from collections.abc import Iterator

from django.conf import settings
from django.db import connection


def _advisory_key(name: str) -> int:
    # pg_advisory_lock takes a signed 64-bit key; derive a stable one from the name.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_held = threading.local()


@contextlib.contextmanager
def exclusive_lock(name: str) -> Iterator[None]:
    """Hold the lock `name`; re-entrant within one thread (a workflow may nest a writer)."""
    held: set[str] = getattr(_held, "names", set())
    _held.names = held
    if name in held:
        yield
        return
    held.add(name)
    try:
        with _acquire(name):
            yield
    finally:
        held.discard(name)


@contextlib.contextmanager
def _acquire(name: str) -> Iterator[None]:
    if connection.vendor == "postgresql":
        key = _advisory_key(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [key])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    settings.LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(settings.LOCK_DIR / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
