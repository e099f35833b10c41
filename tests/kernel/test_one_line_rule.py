"""One rule for a device's name and hardware id (onboard_cli.text_rules), the same at the four
entry points: the API, the portal's form, the portal's bulk CSV and `onboard bulk-register`.

Issue #16, item 14: the portal's bulk CSV accepted names and hardware ids holding U+2028 or
U+0085, which the API refused.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from devices.models import Device
from onboard_cli import text_rules
from onboard_cli.main import main
from portal import bulk
from tests.support.portal import hidden, signed_in

# Every Unicode line or paragraph separator, the C0/C1 controls that break lines, and the
# invisible format characters that disguise text (bidi override, zero-width, BOM, tag).
REFUSED = {
    "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029",
    "NEXT LINE": "\u0085",
    "VERTICAL TAB": "\x0b",
    "FORM FEED": "\x0c",
    "CARRIAGE RETURN": "\r",
    "LINE FEED": "\n",
    "NUL": "\x00",
    "TAB": "\t",
    "ESCAPE": "\x1b",
    "DELETE": "\x7f",
    "FILE SEPARATOR": "\x1c",
    "RIGHT-TO-LEFT OVERRIDE": "\u202e",
    "ZERO WIDTH SPACE": "\u200b",
    "BYTE ORDER MARK": "\ufeff",
    "SOFT HYPHEN": "\u00ad",
}
# In the middle, and at the end, where a strip() would have cut a separator off unseen.
PLACES = {"inside": "sensor{}01", "at the end": "sensor-01{}"}
CASES = [
    pytest.param(template.format(char), id=f"{label} {place}")
    for label, char in REFUSED.items()
    for place, template in PLACES.items()
]
ACCEPTED = [
    "boiler-7",
    "Chaudière n°7, étage 2",
    "センサー 7",
    "sensor 👍 7",
    "x" * 128,
    "site \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
]


def test_the_rule_covers_every_control_format_and_separator_character() -> None:
    """The written-out ranges hold every Cc, Cf, Zl and Zp code point of the BMP this Python knows."""
    missed = [
        f"U+{code:04X}"
        for code in range(0x10000)
        if unicodedata.category(chr(code)) in {"Cc", "Cf", "Zl", "Zp"}
        and text_rules.one_line_problem(f"a{chr(code)}b") is None
    ]
    assert missed == []
    for value in ACCEPTED:
        assert text_rules.one_line_problem(value) is None, value
    assert text_rules.one_line_problem("x" * 129) == "is longer than 128 characters"
    assert text_rules.one_line_problem("\u00a0x") == "starts or ends with white space"


@pytest.mark.parametrize("value", CASES)
def test_api_refuses(value: str, operator_api: Any) -> None:
    for field in ("name", "hardware_id"):
        body = {"name": "ok-name", "hardware_id": "OK-1", field: value}
        answer = operator_api.post("/register", body, format="json")
        assert answer.status_code == 400, answer.content
        error = answer.json()["error"]
        if value.count("\x00"):
            # Refused by the JSON parser already (PostgreSQL cannot store it).
            assert "NUL" in error["message"]
        else:
            assert error["code"] == "invalid" and list(error["fields"]) == [field]
            assert "use one line of text" in error["fields"][field][0]
    assert not Device.objects.exists()


@pytest.fixture
def operator(ca: Any, make_user: Any, verified_login: Any) -> Client:
    return signed_in(make_user, verified_login, "Operators", "one-line-operator")


@pytest.mark.parametrize("value", CASES)
def test_portal_form_refuses(value: str, operator: Client) -> None:
    for field in ("name", "hardware_id"):
        page = operator.get("/portal/devices/register/")
        data = {"name": "ok-name", "hardware_id": "OK-1", "key_type": "ec-p256", "metadata": "", "csr": ""}
        data[field] = value
        data["submission"] = hidden(page.content.decode(), "submission")
        answer = operator.post("/portal/devices/register/", data)
        assert answer.status_code == 200  # the form again, with its error
        html = answer.content.decode()
        assert "Null characters are not allowed" in html or "use one line of text" in html
    assert not Device.objects.exists()


def _csv(name: str, hardware_id: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerows([["name", "hardware_id", "key_type"], [name, hardware_id, "ec-p256"]])
    return out.getvalue()


@pytest.mark.parametrize("value", CASES)
def test_portal_bulk_csv_refuses(value: str, db: Any) -> None:
    for name, hardware_id, label in ((value, "OK-1", "name"), ("ok-name", value, "hardware id")):
        checked = bulk.check_csv(_csv(name, hardware_id).encode())
        assert not checked.ok and not checked.rows
        messages = " ".join(problem.message for problem in checked.problems)
        # A NUL the csv module itself refuses; everything else meets the shared rule.
        assert f"The {label} contains U+" in messages or "NUL" in messages, messages


@pytest.mark.parametrize("value", CASES)
def test_cli_bulk_register_refuses_before_sending_anything(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, hardware_id, label in ((value, "OK-1", "name"), ("ok-name", value, "hardware_id")):
        source = tmp_path / "devices.csv"
        source.write_text(_csv(name, hardware_id), encoding="utf-8")
        # Port 9 (discard) is closed here: were anything sent, the error would be "unreachable".
        code = main(["--url", "http://127.0.0.1:9", "--token", "t", "bulk-register", str(source)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"{label} contains U+" in err or "NUL" in err, err


def test_the_two_sides_agree_on_what_is_accepted(operator_api: Any, db: Any, tmp_path: Path) -> None:
    """Names the rule accepts pass every entry point's check (no side is stricter)."""
    for number, value in enumerate(ACCEPTED):
        assert bulk.check_csv(_csv(value, f"HW-{number}").encode()).ok
        answer = operator_api.post("/register", {"name": value, "key_type": "ec-p256"}, format="json")
        assert answer.status_code == 201, answer.content


def test_the_cli_package_imports_no_django() -> None:
    code = "import sys, onboard_cli.main, onboard_cli.text_rules; assert 'django' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
