"""A client-side read timeout for PostgreSQL connections (DATABASE_READ_TIMEOUT_SECONDS).

libpq has no read timeout. A server that freezes while a process holds an open connection (kept
between requests, CONN_MAX_AGE) still has its kernel acknowledge every byte, so neither TCP
keepalives nor `tcp_user_timeout` fire, and `statement_timeout` is enforced by the frozen server
itself: the query blocks forever, and with it a gunicorn worker. Here one daemon thread per
process watches the database calls in flight and, when one overruns the bound, shuts the
connection's socket down. The blocked call then fails with OperationalError (the API answers
503 `database_unavailable`) and Django discards the connection; the next request opens a new one.

Registration is a dict set and pop per query (no thread, no timer per query): the registration
hot path runs about fifteen queries and is benchmarked. Enabled only in the web process
(onboarding/wsgi.py) and in Celery workers (onboarding/celery.py), never in management commands:
a migration or a long command may legitimately run one statement for minutes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import Error, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

logger = logging.getLogger(__name__)


class _Call:
    """One database call in flight: when it must have answered, and the socket to cut if not."""

    __slots__ = ("cut", "deadline", "fd")

    def __init__(self, deadline: float, fd: int) -> None:
        self.deadline = deadline
        self.fd = fd
        self.cut = False


#: The calls in flight in this process, by thread (a thread runs one database call at a time).
_in_flight: dict[int, _Call] = {}
_watchdog_lock = threading.Lock()
_watchdog_pid = 0  # the process whose watchdog thread runs (a forked child starts its own)


class ConnectionWatch:
    """Installed once on each PostgreSQL connection (Django's execute_wrappers): every query
    through a cursor is watched. Also watches the calls Django makes on the driver directly,
    bypassing the wrappers: the health check before a kept connection is reused (the first call
    of every request, CONN_HEALTH_CHECKS), commit and rollback."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection
        self.bound = float(settings.DATABASE_READ_TIMEOUT_SECONDS)
        self.fd = -1

    def attach(self) -> None:
        """(Re)reads the socket of the connection just opened; called on every connect."""
        self.fd = self.connection.connection.pgconn.socket

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
    ) -> Any:
        key = threading.get_ident()
        call = _in_flight[key] = _Call(time.monotonic() + self.bound, self.fd)
        try:
            return execute(sql, params, many, context)
        except Error as exc:  # a cut connection may surface as any driver error
            if call.cut:
                raise self.timed_out() from exc
            raise
        finally:
            _in_flight.pop(key, None)

    def timed_out(self) -> OperationalError:
        return OperationalError(
            f"PostgreSQL did not answer within {self.bound:g} s (DATABASE_READ_TIMEOUT_SECONDS); "
            "the connection was cut"
        )

    def watched(self, method: Callable[..., Any], *, raise_if_cut: bool = False) -> Callable[..., Any]:
        def call_watched(*args: Any, **kwargs: Any) -> Any:
            key = threading.get_ident()
            call = _in_flight[key] = _Call(time.monotonic() + self.bound, self.fd)
            try:
                result = method(*args, **kwargs)
            finally:
                _in_flight.pop(key, None)
            if call.cut and raise_if_cut:
                # The health check found the connection dead and closed it; without this Django
                # would open a new one at once, and a frozen server would cost the request
                # connect_timeout more. The request answers now (503 database_unavailable).
                raise self.timed_out()
            return result

        return call_watched


def _install(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """connection_created receiver: watch this connection (once per connection object; a
    reconnect of the same object only refreshes the socket)."""
    if connection.vendor != "postgresql":
        return  # SQLite has no server that could freeze
    watch = next(
        (wrapper for wrapper in connection.execute_wrappers if isinstance(wrapper, ConnectionWatch)), None
    )
    if watch is None:
        watch = ConnectionWatch(connection)
        connection.execute_wrappers.append(watch)
        # Instance attributes: these calls go to the driver directly, not through execute_wrappers.
        connection.close_if_health_check_failed = watch.watched(  # type: ignore[method-assign]
            connection.close_if_health_check_failed, raise_if_cut=True
        )
        for name in ("close_if_unusable_or_obsolete", "_commit", "_rollback"):
            setattr(connection, name, watch.watched(getattr(connection, name)))
    watch.attach()
    _ensure_watchdog()


def enable() -> None:
    """Watch every PostgreSQL connection this process opens from now on (and this thread's open
    ones). Idempotent."""
    connection_created.connect(_install, dispatch_uid="kernel.dbwatch")
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            _install(None, connection)


def disable() -> None:
    """Stop watching connections opened from now on (tests)."""
    connection_created.disconnect(dispatch_uid="kernel.dbwatch")


def _ensure_watchdog() -> None:
    global _watchdog_pid
    if _watchdog_pid == os.getpid():
        return
    with _watchdog_lock:
        if _watchdog_pid != os.getpid():
            _watchdog_pid = os.getpid()
            threading.Thread(target=_watch, name="database-watchdog", daemon=True).start()


def _watch() -> None:
    while True:
        time.sleep(_tick())
        now = time.monotonic()
        for call in _in_flight.copy().values():  # a copy: other threads add and remove calls
            if call.deadline <= now and not call.cut:
                call.cut = True
                _cut(call.fd)


def _tick() -> float:
    # A tenth of the bound, at most half a second: a call is cut at most that late.
    return min(0.5, float(settings.DATABASE_READ_TIMEOUT_SECONDS) / 10)


def _cut(fd: int) -> None:
    """Shut the socket down (both ways) through a duplicate of its descriptor: the blocked call
    sees the connection end at once. The descriptor itself is never closed here: it belongs to
    the thread that uses it, and a closed number could be reused by another file meanwhile."""
    logger.error("PostgreSQL did not answer within DATABASE_READ_TIMEOUT_SECONDS: cutting the connection")
    try:
        with socket.socket(fileno=os.dup(fd)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        logger.warning("could not cut the database connection: %s", exc)


def _forget_in_child() -> None:
    # A forked child has none of its parent's threads: their calls are not in flight here.
    _in_flight.clear()


os.register_at_fork(after_in_child=_forget_in_child)
