"""The one rule for a device's name and hardware id, used by every entry point: the REST API's
serializer, the portal's registration form, the portal's bulk CSV check and `onboard
bulk-register`; and the one format of a bulk registration's result file (its columns, and
cells a spreadsheet cannot run as formulas).

It lives in the CLI's package because that is the package that ships on its own (`pip install
.` gives `onboard`) and must not import Django; the server imports it from the checkout. It is
pure Python with no imports beyond the standard library, so both sides can.

The rule: one line of 1 to 128 characters, with no character of the Unicode categories Cc
(controls: NUL, tab, CR, LF, VT, FF, NEL U+0085 ...), Cf (invisible format characters of the
BMP: zero-width spaces, soft hyphens, byte-order marks, and the bidirectional overrides that
make text read differently from what it is, the "Trojan Source" trick, CVE-2021-42574), Zl
(U+2028) or Zp (U+2029), and no white space at either end. Names end up in CSV exports, log lines, certificate
requests and people's terminals, where any of these splits or disguises a line.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

MAX_LENGTH = 128

#: Every code point of the categories Cc, Cf, Zl and Zp in the Basic Multilingual Plane, as of
#: Unicode 15.1. Written out rather than read from `unicodedata` so that every Python version
#: (the CLI's may be older than the server's) and the OpenAPI schema apply exactly the same set.
#: The few format characters beyond the BMP are left alone: none breaks a line or reorders text,
#: the tag characters spell the flags of Scotland or Wales, and ECMA-262 patterns (the OpenAPI
#: schema's, which clients and schemathesis check against) cannot name them without the u flag.
FORBIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
)

# A four-hex-digit \u escape reads the same in Python's re and in ECMA-262 (OpenAPI's pattern
# dialect), so one character class serves the server and the schema.
_FORBIDDEN_CLASS = "".join(
    f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}" for low, high in FORBIDDEN_RANGES
)

#: The rule as a regular expression, for the OpenAPI schema (clients can check before they send).
PATTERN = f"^[^\\s{_FORBIDDEN_CLASS}](?:[^{_FORBIDDEN_CLASS}]*[^\\s{_FORBIDDEN_CLASS}])?$"

_FORBIDDEN = re.compile(f"[{_FORBIDDEN_CLASS}]")


def _describe(char: str) -> str:
    name = unicodedata.name(char, "") or {"\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\t": "TAB"}.get(
        char, "a control character"
    )
    return f"U+{ord(char):04X} ({name})"


def one_line_problem(value: str) -> str | None:
    """What is wrong with `value` as a name or hardware id, as the end of a sentence that starts
    with the field's label ("The name ..."); None when it is fine."""
    if not value:
        return "is empty"
    if len(value) > MAX_LENGTH:
        return f"is longer than {MAX_LENGTH} characters"
    found = _FORBIDDEN.search(value)
    if found:
        return (
            f"contains {_describe(found.group())} at position {found.start() + 1}; "
            "use one line of text without control or invisible formatting characters"
        )
    if value[0].isspace() or value[-1].isspace():
        return "starts or ends with white space"
    return None


def clean_typed(value: str) -> str:
    """What people type or paste into a form or a spreadsheet cell: plain spaces around it are
    dropped (as a form would). Nothing else is: a line break or a control character at either
    end is refused by the rule, not silently cut off."""
    return value.strip(" ")


# --- Result files (the portal's bulk results and `onboard bulk-register`'s) -----------------

#: The columns of a bulk registration's result file, in order: the portal's download and the
#: file `onboard bulk-register` writes are the same file, so a script reads either.
RESULT_COLUMNS = (
    "line",
    "name",
    "hardware_id",
    "device_id",
    "status",
    "download_url",
    "bundle_password",
    "link_expires_at",
    "error",
    # Rows registered for EST delivery (delivery = est): the one-time enrolment code instead of
    # a link and a password. Last, so that scripts reading the older columns by position still work.
    "enrollment_code",
    "enrollment_code_expires_at",
)

#: A cell that starts with one of these is read as a formula by spreadsheet programs: a device
#: name such as `=HYPERLINK(...)` would run when an operator opens the results (CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """The value, with a leading ' if a spreadsheet would run it as a formula (OWASP's advice):
    shown as the text it is. Ids, links, passwords and dates never start that way."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def safe_row(row: dict[str, Any], columns: Sequence[str] = RESULT_COLUMNS) -> dict[str, Any]:
    return {column: spreadsheet_safe(row.get(column, "")) for column in columns}
