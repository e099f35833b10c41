"""Human output (tables, lines) by default, JSON with --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table; columns are (key, header) pairs."""
    cells = [[header for _, header in columns]]
    cells += [["" if row.get(key) is None else str(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def device_summary(device: dict[str, Any]) -> str:
    certificate = device.get("certificate") or {}
    lines = [
        f"Device       {device['name']} ({device['id']})",
        f"Status       {device['status']}",
        f"Hardware id  {device.get('hardware_id') or '-'}",
    ]
    if certificate:
        lines += [
            f"Certificate  {certificate['serial']} ({certificate['key_type']}), {certificate['status']}",
            f"Valid until  {certificate['not_after']}",
            f"SHA-256      {certificate['fingerprint_sha256']}",
        ]
        if certificate.get("revocation_reason"):
            lines.append(f"Revoked      {certificate['revoked_at']} ({certificate['revocation_reason']})")
    if device.get("revocation_enforced_at"):
        lines.append(f"Enforced     {device['revocation_enforced_at']} (broker)")
    topics = ", ".join(f"{topic['access']} {topic['filter']}" for topic in device.get("topics", []))
    lines.append(f"Topics       {topics or '-'}")
    return "\n".join(lines)


def bundle_notice(answer: dict[str, Any], saved_to: str | None = None) -> str:
    lines = []
    if saved_to:
        lines.append(f"Bundle saved to {saved_to}")
    else:
        lines += [f"Download     {answer['download_url']}", f"Expires      {answer['download_expires_at']}"]
    lines += [
        f"Password     {answer['bundle_password']}",
        "Keep the password safe: it is shown only now and the portal does not store it.",
    ]
    return "\n".join(lines)


def enrollment_notice(answer: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"Enrol code   {answer['enrollment_code']}",
            f"Expires      {answer['enrollment_code_expires_at']}",
            "The device enrols itself over EST (/.well-known/est/simpleenroll, HTTP Basic: device id "
            "and this code). The code works once and is shown only now.",
        ]
    )


def warn(message: str) -> None:
    print(message, file=sys.stderr)
