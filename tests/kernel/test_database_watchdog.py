"""Issue #16, item 1: PostgreSQL frozen under an OPEN connection (kept between requests) answers
503 `database_unavailable` within 10 s; the client-side watchdog (kernel/dbwatch.py) cuts a
database call that overruns DATABASE_READ_TIMEOUT_SECONDS.

All against the machine's PostgreSQL (127.0.0.1:5432). "Frozen" is tests/support/tcp_proxy.py's relay
that stops relaying: the kernel still accepts and acknowledges every byte, nothing answers, as
with a SIGSTOPped or partitioned server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import ConnectionHandler

from kernel import dbwatch
from tests.support import ROOT
from tests.support.helpers import free_port
from tests.support.tcp_proxy import FreezableProxy, freezable_proxy
from tests.support.workers import gunicorn_server

POSTGRES = ("127.0.0.1", 5432)
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: The issue's bound: every request answers within this, whatever is frozen.
ANSWER_BOUND_SECONDS = 10.0


def postgres_connection(port: int = POSTGRES[1]) -> BaseDatabaseWrapper:
    """A Django connection of its own to the machine's PostgreSQL (whatever the test database is)."""
    handler = ConnectionHandler(
        {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "postgres",
                "USER": "postgres",
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "CONN_MAX_AGE": 60,  # kept between requests, as the portal keeps them
                "CONN_HEALTH_CHECKS": True,
                "OPTIONS": {"connect_timeout": 3},
            }
        }
    )
    return handler["default"]


@pytest.fixture
def watching(settings: Any, django_db_blocker: Any) -> Iterator[float]:
    """The watchdog on, with a bound of one second, for connections opened in the test (their
    own, not the test database's: pytest-django's guard is lifted for them)."""
    settings.DATABASE_READ_TIMEOUT_SECONDS = 1.0
    dbwatch.enable()
    with django_db_blocker.unblock():
        yield settings.DATABASE_READ_TIMEOUT_SECONDS
    dbwatch.disable()


def query(connection: BaseDatabaseWrapper, sql: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - the test asserts which
        return exc, time.monotonic() - started


def watches(connection: BaseDatabaseWrapper) -> list[dbwatch.ConnectionWatch]:
    return [
        wrapper for wrapper in connection.execute_wrappers if isinstance(wrapper, dbwatch.ConnectionWatch)
    ]


def test_normal_queries_are_not_cut_and_cost_no_thread(watching: float) -> None:
    connection = postgres_connection()
    try:
        assert query(connection, "SELECT pg_sleep(0.3), 1") == ("", 1)  # well within the bound
        threads = threading.active_count()
        for number in range(200):
            assert query(connection, f"SELECT {number}") == (number,)
        assert threading.active_count() == threads  # one watchdog per process, no thread per query
        assert [thread.name for thread in threading.enumerate()].count("database-watchdog") == 1
        assert connection.is_usable()
        assert len(watches(connection)) == 1
        assert dbwatch._in_flight == {}  # every call unregistered
    finally:
        connection.close()


def test_a_query_longer_than_the_bound_is_cut_and_the_next_one_reconnects(watching: float) -> None:
    connection = postgres_connection()
    try:
        query(connection, "SELECT 1")
        outcome, elapsed = timed(lambda: query(connection, "SELECT pg_sleep(5)"))

        assert isinstance(outcome, OperationalError), outcome
        assert "DATABASE_READ_TIMEOUT_SECONDS" in str(outcome)
        assert watching <= elapsed < watching + 1, f"cut after {elapsed:.2f} s"
        assert not connection.is_usable()
        connection.close_if_unusable_or_obsolete()  # what Django does at the end of the request
        assert connection.connection is None
        assert query(connection, "SELECT 2") == (2,)  # a new connection, watched once
        assert len(watches(connection)) == 1
    finally:
        connection.close()


def test_the_health_check_of_a_kept_connection_to_a_frozen_server_is_cut(watching: float) -> None:
    """The first call of a request on a kept connection is Django's health check (SELECT 1 on
    the driver, not through execute_wrappers): it is watched too, and fails the request at once
    instead of opening another connection to the frozen server."""
    with freezable_proxy(POSTGRES) as proxy:
        connection = postgres_connection(proxy.port)
        try:
            query(connection, "SELECT 1")
            connection.close_if_unusable_or_obsolete()  # a request ends; the connection is kept
            assert connection.connection is not None
            proxy.freeze()

            outcome, elapsed = timed(lambda: query(connection, "SELECT 1"))

            assert isinstance(outcome, OperationalError), outcome
            assert elapsed < watching + 1, f"answered after {elapsed:.2f} s"
            assert connection.connection is None  # discarded, not reused
            proxy.thaw()
            assert query(connection, "SELECT 3") == (3,)
        finally:
            connection.close()


# --- A real portal process (gunicorn, one worker, so every request meets the kept connection)
# on its own migrated database, reached through the relay. ---

SEED = """
import json
from django.contrib.auth.models import Group, User
from accounts.services import create_api_token
from devices.models import Device, DeviceStatus
user = User.objects.create_user("watch-operator")
user.groups.add(Group.objects.get(name="Operators"))
token = create_api_token(user, name="watchdog test", expires_days=1).value
device = Device.objects.create(name="kept", status=DeviceStatus.ACTIVE)
print("SEED", json.dumps({"token": token, "device": str(device.pk)}))
"""


def portal_environment(data_dir: Path, database_url: str) -> dict[str, str]:
    keep = {"PATH", "HOME", "LANG", "TMPDIR"}
    return {key: value for key, value in os.environ.items() if key in keep} | {
        "DJANGO_SETTINGS_MODULE": "onboarding.settings",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "database-watchdog-test-secret-key-0123456789",
        "CA_KEY_PASSPHRASE": "database-watchdog-test",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "BROKER_CATCH_UP_AT_START": "false",
    }


def manage(environment: dict[str, str], *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def portal_database(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A migrated PostgreSQL database of this test's own, with an operator's token and a device."""
    name = f"onb_dbwatch_portal_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        environment = portal_environment(tmp_path / "data", f"postgres://postgres@127.0.0.1:5432/{name}")
        manage(environment, "migrate", "--no-input")
        manage(environment, "init_ca")
        seed_line = next(
            line for line in manage(environment, "shell", "-c", SEED).splitlines() if "SEED" in line
        )
        yield name, portal_environment(tmp_path / "data", "") | json.loads(seed_line.removeprefix("SEED "))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def devices_named(database: str, name: str) -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as direct:
        row = direct.execute("SELECT count(*) FROM devices_device WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return int(row[0])


def test_a_portal_process_with_postgresql_frozen_under_its_kept_connection_answers_503_in_time(
    portal_database: tuple[str, dict[str, str]],
) -> None:
    database, seeded = portal_database
    token, device_id = seeded.pop("token"), seeded.pop("device")
    port = free_port()
    frozen_requests: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        "register": lambda client: client.post("/register", json={"name": "while-frozen"}),
        "device": lambda client: client.get(f"/device/{device_id}"),
        "health": lambda client: client.get("/health"),
    }
    answers: dict[str, tuple[int, Any, float]] = {}
    with freezable_proxy(POSTGRES) as proxy:
        environment = seeded | {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{proxy.port}/{database}"}
        with (
            gunicorn_server(environment, port, workers=1) as server,
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Token {token}"}, timeout=60
            ) as client,
        ):
            for name, request in frozen_requests.items():
                keep_a_connection_open(client, proxy, device_id)
                proxy.freeze()
                started = time.monotonic()
                response = request(client)
                answers[name] = (response.status_code, response.json(), time.monotonic() - started)

            proxy.thaw()
            after = client.get(f"/device/{device_id}")  # the same process, not restarted
            assert server.poll() is None

    for name, (status, body, elapsed) in answers.items():
        assert elapsed < ANSWER_BOUND_SECONDS, f"{name} answered after {elapsed:.1f} s"
        assert status == 503, (name, body)
        if name == "health":  # the per-component answer, naming the database
            assert body["failed"][0] == "database", body
            assert body["checks"]["database"]["status"] == "fail", body
        else:
            assert body["error"]["code"] == "database_unavailable", (name, body)
    assert after.status_code == 200, after.text
    assert devices_named(database, "while-frozen") == 0  # nothing kept


def keep_a_connection_open(client: httpx.Client, proxy: FreezableProxy, device_id: str) -> None:
    """A request served while the database answers: the worker keeps its connection (CONN_MAX_AGE)."""
    proxy.thaw()
    response = client.get(f"/device/{device_id}")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_read_timeout_that_is_not_positive_stops_start_up_in_one_sentence(
    tmp_path: Path, value: str
) -> None:
    environment = portal_environment(tmp_path, "") | {"DATABASE_READ_TIMEOUT_SECONDS": value}
    del environment["DATABASE_URL"]
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Configuration error: DATABASE_READ_TIMEOUT_SECONDS must be more than 0, not {float(value)}: "
        "without it a request waits forever on a database server that froze."
    ]
