"""`onboard bulk-register FILE.csv`: check every row first, then register concurrently, resumably."""

from __future__ import annotations

import csv
import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onboard_cli import text_rules, vocabulary
from onboard_cli.client import CliError, PortalClient, ServerError, Unreachable
from onboard_cli.text_rules import RESULT_COLUMNS, safe_row  # the portal's result file too

KNOWN_COLUMNS = ("name", "hardware_id", "key_type", "csr_file", "delivery")
DONE = ("registered", "already_registered")


@dataclass(frozen=True)
class Row:
    line: int
    name: str
    hardware_id: str | None
    key_type: str | None
    csr: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    delivery: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        if self.hardware_id:
            body["hardware_id"] = self.hardware_id
        if self.csr:
            body["csr"] = self.csr
        elif self.key_type:
            body["key_type"] = self.key_type
        if self.metadata:
            body["metadata"] = self.metadata
        if self.delivery:
            body["delivery"] = self.delivery
        return body

    def idempotency_key(self) -> str:
        """Stable across re-runs of the same file, so a retried row gets its first answer back."""
        identity = f"hw:{self.hardware_id}" if self.hardware_id else f"row:{self.line}:{self.name}"
        return "bulk-" + hashlib.sha256(identity.encode()).hexdigest()[:40]


def read_rows(path: Path, *, default_delivery: str | None = None) -> list[Row]:
    """Every row, or a CliError listing every bad row with its line number (nothing registered).
    A row's `delivery` cell (zip or est) wins over `default_delivery` (`--delivery`)."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CliError(f"Cannot read {path}: {exc.strerror}", exit_code=2) from None
    with handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "name" not in reader.fieldnames:
            raise CliError(
                f"{path}: the first line must be a header with at least a 'name' column.", exit_code=2
            )
        rows: list[Row] = []
        problems: list[str] = []
        seen: dict[str, int] = {}
        for record in reader:
            line = reader.line_num
            row, row_problems = _parse(record, line, path.parent, default_delivery)
            if row is not None and row.hardware_id:
                if row.hardware_id in seen:
                    row_problems.append(f"hardware_id {row.hardware_id} repeats line {seen[row.hardware_id]}")
                seen.setdefault(row.hardware_id, line)
            problems += [f"line {line}: {problem}" for problem in row_problems]
            if row is not None and not row_problems:
                rows.append(row)
    if problems:
        raise CliError(
            f"{path} has {len(problems)} problem(s); nothing was registered:\n" + "\n".join(problems), 2
        )
    if not rows:
        raise CliError(f"{path} has no rows to register.", exit_code=2)
    return rows


def _parse(
    record: dict[str, Any], line: int, base: Path, default_delivery: str | None = None
) -> tuple[Row | None, list[str]]:
    problems = []
    if None in record:
        problems.append("more cells than header columns")
    # The rule the server applies (text_rules, shared); only plain spaces are dropped.
    name = text_rules.clean_typed(record.get("name") or "")
    if problem := text_rules.one_line_problem(name):
        problems.append(f"name {problem}")
    hardware_id = text_rules.clean_typed(record.get("hardware_id") or "") or None
    if hardware_id and (problem := text_rules.one_line_problem(hardware_id)):
        problems.append(f"hardware_id {problem}")
    key_type = (record.get("key_type") or "").strip() or None
    if key_type and key_type not in vocabulary.KEY_TYPES:
        problems.append(f"key_type {key_type!r} is not one of {', '.join(vocabulary.KEY_TYPES)}")
    delivery = (record.get("delivery") or "").strip() or default_delivery
    if delivery and delivery not in vocabulary.DELIVERIES:
        problems.append(f"delivery {delivery!r} is not one of {', '.join(vocabulary.DELIVERIES)}")
    csr = None
    csr_file = (record.get("csr_file") or "").strip()
    if csr_file:
        try:
            csr = (base / csr_file).read_text()
        except OSError as exc:
            problems.append(f"csr_file {csr_file}: {exc.strerror}")
    metadata = {
        key: value.strip()
        for key, value in record.items()
        if key and key not in KNOWN_COLUMNS and isinstance(value, str) and value.strip()
    }
    if problems:
        return None, problems
    return Row(line, name, hardware_id, key_type, csr, metadata, delivery), []


def _done_lines(out: Path) -> set[int]:
    if not out.exists():
        return set()
    with out.open(newline="") as handle:
        return {int(row["line"]) for row in csv.DictReader(handle) if row.get("status") in DONE}


def _header(out: Path) -> list[str] | None:
    if not out.exists():
        return None
    with out.open(newline="") as handle:
        return next(csv.reader(handle), None)


class ResultWriter:
    """Results go to a file created with mode 0600 (it holds bundle passwords and enrolment codes),
    a row at a time."""

    def __init__(self, out: Path) -> None:
        # A run resumed on a file an older `onboard` began keeps that file's columns.
        self._columns = _header(out) or list(RESULT_COLUMNS)
        new = not out.exists()
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        self._handle = os.fdopen(fd, "w", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=self._columns, extrasaction="ignore")
        self._lock = threading.Lock()
        if new:
            self._writer.writeheader()

    def write(self, result: dict[str, Any]) -> None:
        with self._lock:
            self._writer.writerow(safe_row(result, self._columns))
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()


#: How long one row waits out a busy portal (503, 429) or a request of its own still being handled
#: (409 request_in_progress): long enough for a slow registration (the portal's request
#: timeout) to finish. A claim whose request died is taken over at once by the portal.
BUSY_PATIENCE_SECONDS = 120.0
BUSY_FIRST_PAUSE = 0.5
BUSY_LONGEST_PAUSE = 8.0


def register_row(
    client: PortalClient, row: Row, *, patience: float = BUSY_PATIENCE_SECONDS
) -> dict[str, Any]:
    """Register one row. Busy (503), throttled (429) and still-in-progress (409
    request_in_progress) answers are retried with backoff for up to `patience` seconds: safe,
    since the Idempotency-Key makes a repeated request return the first answer."""
    base = {"line": row.line, "name": row.name, "hardware_id": row.hardware_id or ""}
    deadline = time.monotonic() + patience
    pause = BUSY_FIRST_PAUSE
    while True:
        try:
            answer = client.register(row.body(), idempotency_key=row.idempotency_key())
            break
        except ServerError as exc:
            if exc.code == "hardware_id_exists":
                device_id = exc.payload.get("error", {}).get("device_id", "")
                return {**base, "status": "already_registered", "device_id": device_id}
            busy = exc.status in (429, 503) or exc.code == "request_in_progress"
            if busy and time.monotonic() + pause < deadline:
                time.sleep(pause)
                pause = min(pause * 2, BUSY_LONGEST_PAUSE)
                continue
            return {**base, "status": "failed", "error": exc.message}
    if "enrollment_code" in answer:  # delivery est: the device enrols itself with this code
        return {
            **base,
            "status": "registered",
            "device_id": answer["id"],
            "enrollment_code": answer["enrollment_code"],
            "enrollment_code_expires_at": answer.get("enrollment_code_expires_at") or "",
        }
    return {
        **base,
        "status": "registered",
        "device_id": answer["id"],
        "download_url": answer["download_url"],
        "bundle_password": answer["bundle_password"],
        "link_expires_at": answer.get("download_expires_at") or "",
    }


@dataclass
class Summary:
    registered: int = 0
    already_registered: int = 0
    failed: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def run_bulk(
    client: PortalClient,
    rows: list[Row],
    out: Path,
    *,
    concurrency: int,
    on_result: Callable[[dict[str, Any]], None] = lambda result: None,
) -> Summary:
    summary = Summary()
    done = _done_lines(out)
    pending = [row for row in rows if row.line not in done]
    summary.skipped = len(rows) - len(pending)
    writer = ResultWriter(out)
    unreachable: Unreachable | None = None
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(register_row, client, row) for row in pending]
            for future in as_completed(futures):
                if future.cancelled():
                    continue  # not started: the portal had gone away; the next run does it
                try:
                    result = future.result()
                except Unreachable as exc:
                    unreachable = exc
                    for other in futures:
                        other.cancel()
                    continue
                writer.write(result)
                setattr(summary, result["status"], getattr(summary, result["status"]) + 1)
                on_result(result)
    finally:
        writer.close()
    if unreachable is not None:
        raise CliError(f"{unreachable.message}. Rows done so far are in {out}; run again to resume.", 3)
    return summary
