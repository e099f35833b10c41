""".ci/prepare: what `make test` runs first on a fresh Debian machine.

The package manager is the one part that cannot run here: `dpkg-query`, `apt-get` and `id` are
stubs on the front of PATH (a shell script each) that say what is installed, record what would
be installed and say whether we are root. Redis is real: a server the script starts on a free
port, which a second run leaves alone.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.helpers import free_port

PREPARE = ROOT / ".ci" / "prepare"
SUITE_PACKAGES = [
    "make",
    "openssl",
    "ca-certificates",
    "mosquitto",
    "mosquitto-clients",
    "redis-server",
    "chromium",
    "docker-compose",
    "nodejs",
    "nginx",
    "curl",
]
RUNNING_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class FakeDebian:
    """A stub dpkg-query/apt-get/id directory; `installed` is what dpkg reports."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.apt_log = directory / "apt-get.log"
        self.installed_file = directory / "installed"
        directory.mkdir()
        self._script(
            "dpkg-query",
            # Real dpkg-query prints the known packages with their state and fails on unknown ones.
            'status=0\nfor package in "${@:3}"; do\n'
            f'  if grep -qx -- "$package" {shlex.quote(str(self.installed_file))}; then\n'
            '    echo "$package install ok installed"\n'
            '  else echo "dpkg-query: no packages found matching $package" >&2; status=1; fi\n'
            "done\nexit $status\n",
        )
        self._script("apt-get", f'echo "$*" >> {shlex.quote(str(self.apt_log))}\n')
        self._script("id", 'echo "${FAKE_UID:-0}"\n')
        self.installed([*SUITE_PACKAGES, "python3-venv", "postgresql"])

    def _script(self, name: str, body: str) -> None:
        path = self.directory / name
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)

    def installed(self, packages: list[str]) -> None:
        self.installed_file.write_text("".join(f"{name}\n" for name in packages))

    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []

    def run(
        self, *options: str, uid: int = 0, redis_url: str = RUNNING_REDIS
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.directory}:{os.environ['PATH']}"
        env["FAKE_UID"] = str(uid)
        env["TEST_REDIS_URL"] = redis_url
        return subprocess.run(
            [str(PREPARE), *options], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture
def debian(tmp_path: Path) -> FakeDebian:
    return FakeDebian(tmp_path / "stubs")


def without(name: str) -> list[str]:
    return [package for package in [*SUITE_PACKAGES, "python3-venv", "postgresql"] if package != name]


def test_make_test_and_test_postgres_run_prepare_first() -> None:
    for target, expected in (("test", ".ci/prepare"), ("test-postgres", ".ci/prepare --postgres")):
        dry = subprocess.run(
            ["make", "-n", "--no-print-directory", target],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        commands = [line for line in dry.stdout.splitlines() if line.strip()]
        assert commands[0] == expected, dry.stdout
        pytest_at = next(index for index, line in enumerate(commands) if "-m pytest" in line)
        assert pytest_at > 0
    ci_run = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ".ci/prepare --postgres" in ci_run
    assert ci_run.index(".ci/prepare --postgres") < ci_run.index("make test")


def test_check_names_the_missing_tool_and_the_exact_apt_line(debian: FakeDebian) -> None:
    debian.installed(without("chromium"))
    result = debian.run("--check")
    assert result.returncode == 1
    assert "missing system packages: chromium;" in result.stderr
    assert "apt-get update && apt-get install -y --no-install-recommends chromium" in result.stderr
    assert debian.apt_calls() == []  # --check installs nothing, even as root


def test_not_root_prints_the_apt_line_and_stops(debian: FakeDebian) -> None:
    debian.installed([name for name in without("docker-compose") if name != "mosquitto"])
    result = debian.run(uid=1000)
    assert result.returncode == 1
    assert "apt-get install -y --no-install-recommends mosquitto docker-compose" in result.stderr
    assert debian.apt_calls() == []


def test_root_installs_what_is_missing_with_one_update(debian: FakeDebian) -> None:
    # (Not postgresql: after installing it the script trusts loopback in the real pg_hba.conf.)
    debian.installed([name for name in without("redis-server") if name != "chromium"])
    result = debian.run(uid=0)
    assert result.returncode == 0, result.stderr
    calls = debian.apt_calls()
    assert calls[0] == "update -qq"
    assert calls[1].startswith("install -y --no-install-recommends redis-server chromium")
    assert len(calls) == 2


def test_nothing_missing_means_no_apt_and_a_quick_answer(debian: FakeDebian) -> None:
    started = time.monotonic()
    checked = debian.run("--check", "--postgres")
    prepared = debian.run("--postgres")
    elapsed = time.monotonic() - started
    assert checked.returncode == 0, checked.stderr
    assert "tools and services are in place" in checked.stdout
    assert prepared.returncode == 0, prepared.stderr
    assert debian.apt_calls() == []
    assert elapsed < 20, f"two runs with everything in place took {elapsed:.1f} s"


@pytest.fixture
def redis_port() -> Iterator[int]:
    port = free_port()
    yield port
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "shutdown", "nosave"],
        capture_output=True,
        timeout=30,
    )


def redis_pid(port: int) -> str:
    info = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "info", "server"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("process_id:"))


def test_starts_a_stopped_redis_and_leaves_a_running_one_alone(debian: FakeDebian, redis_port: int) -> None:
    url = f"redis://127.0.0.1:{redis_port}/7"
    checked = debian.run("--check", redis_url=url)
    assert checked.returncode == 1
    assert f"not running: redis on 127.0.0.1:{redis_port}" in checked.stderr

    assert debian.run(redis_url=url).returncode == 0
    first = redis_pid(redis_port)
    assert debian.run(redis_url=url).returncode == 0
    assert redis_pid(redis_port) == first  # the running server was not restarted
    assert debian.run("--check", redis_url=url).returncode == 0


def test_unknown_option_is_refused(debian: FakeDebian) -> None:
    result = debian.run("--chek")
    assert result.returncode == 2
    assert "unknown option --chek" in result.stderr
