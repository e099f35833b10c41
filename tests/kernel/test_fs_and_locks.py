"""Atomic file replacement and the cross-process lock that serialises CRL and ACL writers."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from kernel.fs import write_atomically
from tests.support.helpers import lock_held_elsewhere


def test_atomic_write_replaces_whole_file_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "crl.pem"
    target.write_bytes(b"old")
    write_atomically(target, b"new contents", mode=0o640)
    assert target.read_bytes() == b"new contents"
    assert (target.stat().st_mode & 0o777) == 0o640
    assert [path.name for path in tmp_path.iterdir()] == ["crl.pem"]


def test_failed_atomic_write_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "acl"
    target.write_bytes(b"old")

    def fail_replace(source: str, destination: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="No space"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["acl"]


def _hold_lock(lock_dir: str, name: str, log: str, hold_seconds: float) -> None:
    import django
    from django.conf import settings

    django.setup()
    settings.LOCK_DIR = Path(lock_dir)
    from kernel.locks import exclusive_lock

    with exclusive_lock(name):
        with open(log, "a") as handle:
            handle.write(f"enter {os.getpid()} {time.monotonic()}\n")
        time.sleep(hold_seconds)
        with open(log, "a") as handle:
            handle.write(f"leave {os.getpid()} {time.monotonic()}\n")


def test_lock_serialises_separate_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The file lock is SQLite's (one machine); PostgreSQL's advisory lock has its own test below.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'devices.db'}")
    log = tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_hold_lock, args=(str(tmp_path / "locks"), "crl", str(log), 0.3))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    events = [line.split()[0] for line in log.read_text().splitlines()]
    # Critical sections never overlap: strictly enter, leave, enter, leave, ...
    assert events == ["enter", "leave"] * 3


def test_lock_is_reentrant_in_one_thread(settings, tmp_path: Path, db) -> None:
    from kernel.locks import exclusive_lock
    from pki.crl import CRL_LOCK

    settings.LOCK_DIR = tmp_path
    with exclusive_lock(CRL_LOCK), exclusive_lock(CRL_LOCK):
        entered = True
    assert entered


def _hold_database_lock(log: str, hold_seconds: float) -> None:
    import django

    django.setup()
    from django.db import connection

    from kernel.locks import exclusive_lock
    from pki.crl import CRL_LOCK

    with exclusive_lock(CRL_LOCK):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # The lock this backend holds, seen by the server itself.
                cursor.execute(
                    "SELECT count(*) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
                )
                (held,) = cursor.fetchone()
        else:  # SQLite: one machine, a lock file beside the data
            held = len(list((Path(os.environ["DATA_DIR"]) / "locks").glob("crl*")))
        with open(log, "a") as handle:
            handle.write(f"enter {os.getpid()} {time.monotonic()} {connection.vendor} {held}\n")
        time.sleep(hold_seconds)
        with open(log, "a") as handle:
            handle.write(f"leave {os.getpid()} {time.monotonic()} {connection.vendor} {held}\n")


@pytest.mark.django_db
def test_processes_serialise_through_the_lock_their_database_calls_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the CRL and ACL writers of every web and worker process, on any machine,
    queue behind one advisory lock and no lock file is involved; on SQLite (one machine) they
    queue behind a lock file. `make test` runs the one, `make test-postgres` the other."""
    from django.db import connection

    from tests.support.helpers import subprocess_database_url

    monkeypatch.setenv("DATABASE_URL", subprocess_database_url())
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    log = tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hold_database_lock, args=(str(log), 0.3)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    entries = [line.split() for line in log.read_text().splitlines()]
    assert [entry[0] for entry in entries] == ["enter", "leave"] * 3
    intervals = [(float(entries[i][2]), float(entries[i + 1][2])) for i in range(0, 6, 2)]
    for (_, left), (entered, _) in itertools.pairwise(intervals):
        assert entered >= left  # no overlap
    if connection.vendor == "postgresql":
        assert {(entry[3], entry[4]) for entry in entries} == {("postgresql", "1")}
        assert not (tmp_path / "data" / "locks").exists()
    else:
        assert {(entry[3], entry[4]) for entry in entries} == {("sqlite", "1")}


def test_a_lock_held_elsewhere_times_out_with_a_clear_error(settings: Any, tmp_path: Path, db: Any) -> None:
    from kernel.locks import LockTimeout, exclusive_lock
    from pki.crl import CRL_LOCK

    settings.LOCK_DIR = tmp_path
    settings.LOCK_TIMEOUT_SECONDS = 0.3
    with lock_held_elsewhere(CRL_LOCK):
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="held the crl lock"), exclusive_lock(CRL_LOCK):
            pass
        assert 0.3 <= time.monotonic() - started < 5
    with exclusive_lock(CRL_LOCK):  # free again once the holder lets go
        pass


def test_a_revocation_that_cannot_get_the_crl_lock_changes_nothing(
    settings: Any, tmp_path: Path, operator_api: Any, crl_file: Path, broker_files: None
) -> None:
    from devices.models import Device
    from pki.crl import CRL_LOCK

    settings.LOCK_DIR = tmp_path
    settings.LOCK_TIMEOUT_SECONDS = 0.3
    settings.BROKER_ACL_FILE = tmp_path / "mosquitto.acl"
    settings.BROKER_CRL_FILE = tmp_path / "mosquitto-crl.pem"
    settings.BROKER_PROBE_DIR = tmp_path / "probe"
    device_id = operator_api.post(
        "/register", {"name": "waits", "key_type": "ec-p256"}, format="json"
    ).json()["id"]
    crl_before = crl_file.read_bytes()
    with lock_held_elsewhere(CRL_LOCK):
        response = operator_api.post(f"/revoke/{device_id}")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "lock_timeout"
    assert Device.objects.get(pk=device_id).status == "active"
    assert crl_file.read_bytes() == crl_before
    assert operator_api.post(f"/revoke/{device_id}").status_code == 200
