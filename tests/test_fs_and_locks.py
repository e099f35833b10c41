"""Atomic file replacement and the cross-process lock that serialises CRL and ACL writers."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from onboarding.fs import write_atomically


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
    from onboarding.locks import exclusive_lock

    with exclusive_lock(name):
        with open(log, "a") as handle:
            handle.write(f"enter {os.getpid()} {time.monotonic()}\n")
        time.sleep(hold_seconds)
        with open(log, "a") as handle:
            handle.write(f"leave {os.getpid()} {time.monotonic()}\n")


def test_lock_serialises_separate_processes(tmp_path: Path) -> None:
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


def test_lock_is_reentrant_in_one_thread(settings, tmp_path: Path) -> None:
    from onboarding.locks import exclusive_lock

    settings.LOCK_DIR = tmp_path
    with exclusive_lock("crl"), exclusive_lock("crl"):
        entered = True
    assert entered
