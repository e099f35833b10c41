"""Locks that hold across processes and machines, for writers that must run one at a time.

On PostgreSQL an advisory lock serialises every web and worker process sharing the
database; on SQLite (one machine by nature) an flock on a file in LOCK_DIR does. A writer
waits at most LOCK_TIMEOUT_SECONDS: a process stuck while holding a lock makes the others
fail with a clear error (503 `lock_timeout`, nothing changed) instead of hanging with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import connection

from kernel.errors import ServiceError


class LockTimeout(ServiceError):
    code = "lock_timeout"
    status = 503


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


def _wait_for(name: str, attempt: Callable[[], bool]) -> None:
    """Call `attempt` (a non-blocking try) until it succeeds or LOCK_TIMEOUT_SECONDS pass."""
    deadline = time.monotonic() + settings.LOCK_TIMEOUT_SECONDS
    pause = 0.005
    while not attempt():
        if time.monotonic() >= deadline:
            raise LockTimeout(
                f"Another process has held the {name} lock for over {settings.LOCK_TIMEOUT_SECONDS} s, "
                "so nothing was changed; try again, and look for a stuck web or worker process."
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


@contextlib.contextmanager
def lock_if_free(name: str) -> Iterator[bool]:
    """Take the lock `name` if no live process holds it, without waiting; yields whether it was
    taken (and holds it for the block if so). The operating system (flock) or PostgreSQL (an
    advisory lock belongs to its session) frees it when its holder dies, so a lock found free
    means nobody is at work under it, even a process killed with SIGKILL a moment ago."""
    with _acquire(name, wait=False) as taken:
        yield taken


def forget_lock(name: str) -> None:
    """Remove the lock file of `name` (SQLite; nothing on PostgreSQL). Only for a lock that
    guards something now final: a process still waiting on the old file then finds it free and
    sees the final state, and a newcomer makes a new file."""
    if connection.vendor != "postgresql":
        (settings.LOCK_DIR / f"{name}.lock").unlink(missing_ok=True)


@contextlib.contextmanager
def _acquire(name: str, *, wait: bool = True) -> Iterator[bool]:
    if connection.vendor == "postgresql":
        key = _advisory_key(name)

        def try_advisory() -> bool:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
                return bool(cursor.fetchone()[0])

        taken = _take(name, try_advisory, wait)
        try:
            yield taken
        finally:
            if taken:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    settings.LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(settings.LOCK_DIR / f"{name}.lock", "a") as handle:

        def try_flock() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        taken = _take(name, try_flock, wait)
        try:
            yield taken
        finally:
            if taken:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _take(name: str, attempt: Callable[[], bool], wait: bool) -> bool:
    if not wait:
        return attempt()
    _wait_for(name, attempt)
    return True
