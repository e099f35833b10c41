"""The README's five-minute walk-through, run as written: a portal from `make run` on a port that
is not 8000, a real Mosquitto from the generated configuration on a port that is not 8883,
registration, download, a device publishing with its certificate, revocation, and the refusal.

The blocks are read from README.md itself, so the README cannot drift from what works. They run
in a scratch directory that links to this checkout (so the walk-through's relative paths, its
`var/` and the files it writes stay out of the work tree), with the two ports swapped for free
ones.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.helpers import free_port

README = ROOT / "README.md"
SECTION = "## Five minutes: from clone to a revoked device"
README_PORTAL_PORT = "9000"
README_BROKER_PORT = "18883"

pytestmark = pytest.mark.timeout(600)


def walkthrough_blocks() -> list[str]:
    text = README.read_text()
    assert SECTION in text, "the README lost its walk-through"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def scratch_checkout(directory: Path) -> Path:
    """A directory whose entries link to this checkout's, without its var/ and work files."""
    directory.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in {"var", ".git", "test-artifacts"}:
            continue
        (directory / entry.name).symlink_to(entry)
    return directory


def test_readme_blocks_are_the_two_terminals() -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) == 2
    assert blocks[0].strip() == f"PORT={README_PORTAL_PORT} make run"
    assert f"-p {README_BROKER_PORT}" in blocks[1] and f"--port {README_BROKER_PORT}" in blocks[1]


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    terminal_1, terminal_2 = walkthrough_blocks()
    portal_port, broker_port = str(free_port()), str(free_port())
    terminal_1 = terminal_1.replace(README_PORTAL_PORT, portal_port)
    terminal_2 = terminal_2.replace(README_PORTAL_PORT, portal_port).replace(README_BROKER_PORT, broker_port)
    work = scratch_checkout(tmp_path / "checkout")
    keep = {"PATH", "HOME", "LANG", "TMPDIR"}
    env = {key: value for key, value in os.environ.items() if key in keep}
    # The settings live beside the real checkout (manage.py resolves its links); the walk-through's
    # relative `var/` must be the portal's DATA_DIR, as it is in a plain clone.
    env["DATA_DIR"] = str(work / "var")
    portal = subprocess.Popen(
        ["bash", "-c", terminal_1],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert portal.poll() is None, portal.stdout.read() if portal.stdout else ""
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{portal_port}/", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "make run did not serve"
                time.sleep(0.5)
        result = subprocess.run(
            ["bash", "-e", "-c", terminal_2],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "link_used" in output
        assert "RC:135" in output  # another device's topic: PUBACK 0x87, not authorized
        assert "refused: certificate revoked" in output
        assert '"status": "revoked"' in output or '"status":"revoked"' in output
        assert not re.search(r'"revocation_enforced_at": ?null', output)
        assert "Serial Number" in output
        for name in ("README.txt", "ca.crt", "device.crt", "device.json", "device.key"):
            assert (work / "boiler-7" / name).exists()
        # The bundle names the broker the walk-through started, and links name the port make run used.
        device_json = (work / "boiler-7" / "device.json").read_text()
        assert broker_port in device_json
        assert f"127.0.0.1:{portal_port}" in (work / "boiler-7.json").read_text()
    finally:
        os.killpg(portal.pid, signal.SIGTERM)
        portal.wait(timeout=30)
        subprocess.run(["pkill", "-f", str(work / "var" / "broker" / "mosquitto.conf")], check=False)
