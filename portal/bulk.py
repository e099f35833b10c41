"""Bulk registration from a CSV file: check everything, confirm, run, hand over results once.

1. `check_csv` reads the whole file and reports every bad row (line numbers as in a
   spreadsheet: the header is line 1) before anything is created: empty or over-long names,
   bad key types, hardware ids repeated in the file or already registered, rows with more
   fields than the header.
2. `start` runs the checked rows in a thread of the web process. The passwords it receives
   are written only encrypted (AES-256-GCM, one `BulkResult` per row) under a random key that
   the thread holds in memory and the browser holds in an HttpOnly cookie; the server never
   stores it. Not a Celery task on purpose: the key would then sit in a queue message.
3. After every row the job's heartbeat is written; a job whose heartbeat stopped (the web
   process restarted) shows as interrupted and can be continued from the same browser: rows
   with a result are skipped.
4. `collect` opens the results once (a conditional UPDATE decides which request gets them),
   returns the CSV and deletes the ciphertext.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from devices.models import Device
from devices.registration import RegistrationRequest, register_device
from enrollment.enroll import register_for_enrollment
from kernel.errors import ServiceError
from onboard_cli import text_rules, vocabulary
from onboard_cli.text_rules import RESULT_COLUMNS, safe_row  # the file `onboard bulk-register` writes
from pki.profiles import KeyType
from portal import sealed
from portal.forms import MAX_METADATA_VALUE
from portal.models import BulkJob, BulkJobStatus, BulkResult

logger = logging.getLogger(__name__)

NAME, HARDWARE_ID, KEY_TYPE, DELIVERY = "name", "hardware_id", "key_type", "delivery"
RESERVED = {NAME, HARDWARE_ID, KEY_TYPE, DELIVERY}
# A row never takes this long (RSA keygen and a signature); silence beyond it means the runner died.
HEARTBEAT_STALE = dt.timedelta(minutes=2)


@dataclass
class RowProblem:
    line: int
    message: str


@dataclass
class CheckedFile:
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    metadata_columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and not self.problems


def check_csv(data: bytes, *, max_rows: int | None = None) -> CheckedFile:
    """Every problem of the file, with its line number; rows ready to register when there are none."""
    max_rows = max_rows or settings.PORTAL_BULK_MAX_ROWS
    checked = CheckedFile()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        checked.problems.append(RowProblem(0, f"The file is not UTF-8 text (byte {exc.start})."))
        return checked
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        header = [column.strip() for column in (reader.fieldnames or [])]
    except csv.Error as exc:
        checked.problems.append(RowProblem(1, f"The header cannot be read: {exc}."))
        return checked
    if NAME not in header:
        checked.problems.append(
            RowProblem(1, "The header must have a 'name' column (and usually 'hardware_id').")
        )
        return checked
    if len(set(header)) != len(header) or "" in header:
        checked.problems.append(RowProblem(1, "Every column needs a name, and each name may appear once."))
        return checked
    if "csr_file" in header:
        checked.problems.append(
            RowProblem(1, "The portal cannot read CSR files named in a CSV; use `onboard bulk-register`.")
        )
        return checked
    reader.fieldnames = header
    checked.metadata_columns = [column for column in header if column not in RESERVED]
    first_line: dict[str, int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if all(not (value or "").strip() for key, value in record.items() if key is not None):
                continue  # blank lines are not rows
            if len(checked.rows) + len(checked.problems) >= max_rows:
                checked.problems.append(RowProblem(line, f"The file has more than {max_rows} rows."))
                break
            row, problems = _check_row(line, record, checked.metadata_columns, first_line)
            checked.problems.extend(problems)
            if not problems:
                checked.rows.append(row)
    except csv.Error as exc:
        checked.problems.append(RowProblem(reader.line_num, f"The CSV cannot be read here: {exc}."))
    if not checked.rows and not checked.problems:
        checked.problems.append(RowProblem(2, "The file has a header but no rows."))
    _refuse_registered(checked, first_line)
    checked.problems.sort(key=lambda problem: problem.line)
    return checked


def _check_row(
    line: int, record: dict[str | None, Any], metadata_columns: list[str], first_line: dict[str, int]
) -> tuple[dict[str, Any], list[RowProblem]]:
    problems = []
    if record.get(None):
        problems.append(RowProblem(line, "More fields than the header has columns."))
    # The rule every entry point shares (onboard_cli.text_rules); only plain spaces are dropped.
    name = text_rules.clean_typed(record.get(NAME) or "")
    if problem := text_rules.one_line_problem(name):
        problems.append(RowProblem(line, f"The name {problem}."))
    hardware_id = text_rules.clean_typed(record.get(HARDWARE_ID) or "")
    if hardware_id:
        if problem := text_rules.one_line_problem(hardware_id):
            problems.append(RowProblem(line, f"The hardware id {problem}."))
        elif hardware_id in first_line:
            problems.append(
                RowProblem(line, f"Hardware id '{hardware_id}' is also on line {first_line[hardware_id]}.")
            )
        else:
            first_line[hardware_id] = line
    key_type = (record.get(KEY_TYPE) or "").strip() or KeyType.RSA2048.value
    if key_type not in {kind.value for kind in KeyType}:
        allowed = ", ".join(kind.value for kind in KeyType)
        problems.append(RowProblem(line, f"Key type '{key_type}' is not one of {allowed}."))
    delivery = (record.get(DELIVERY) or "").strip() or vocabulary.DELIVERY_ZIP
    if delivery not in vocabulary.DELIVERIES:
        problems.append(
            RowProblem(line, f"Delivery '{delivery}' is not one of {', '.join(vocabulary.DELIVERIES)}.")
        )
    metadata = {
        column: (record.get(column) or "").strip()[:MAX_METADATA_VALUE]
        for column in metadata_columns
        if (record.get(column) or "").strip()
    }
    row = {"line": line, "name": name, "hardware_id": hardware_id, "key_type": key_type, "metadata": metadata}
    if delivery != vocabulary.DELIVERY_ZIP:
        row[DELIVERY] = delivery  # rows stored before EST delivery existed have none: ZIP
    return row, problems


def _refuse_registered(checked: CheckedFile, first_line: dict[str, int]) -> None:
    taken = Device.objects.filter(hardware_id__in=list(first_line)).values_list("hardware_id", "id")
    for hardware_id, device_id in taken:
        assert hardware_id is not None  # matched a hardware id of the file
        line = first_line[hardware_id]
        checked.problems.append(
            RowProblem(line, f"Hardware id '{hardware_id}' is already registered (device {device_id}).")
        )
        checked.rows = [row for row in checked.rows if row["line"] != line]


def create_job(user: User, address: str | None, filename: str, checked: CheckedFile) -> BulkJob:
    return BulkJob.objects.create(
        created_by=user, address=address, filename=filename[:255], rows=checked.rows, total=len(checked.rows)
    )


def is_interrupted(job: BulkJob, now: dt.datetime | None = None) -> bool:
    now = now or timezone.now()
    return (
        job.status == BulkJobStatus.RUNNING
        and job.heartbeat_at is not None
        and now - job.heartbeat_at > HEARTBEAT_STALE
    )


def claim(job: BulkJob) -> bool:
    """Mark the job running, for exactly one caller: a new job, or one whose runner died."""
    now = timezone.now()
    fresh = BulkJob.objects.filter(pk=job.pk, status=BulkJobStatus.VALIDATED)
    stale = BulkJob.objects.filter(
        pk=job.pk, status=BulkJobStatus.RUNNING, heartbeat_at__lt=now - HEARTBEAT_STALE
    )
    claimed = fresh.update(status=BulkJobStatus.RUNNING, started_at=now, heartbeat_at=now) or stale.update(
        heartbeat_at=now
    )
    return bool(claimed)


def start(job: BulkJob, key: bytes) -> None:
    """Run the claimed job: in this request when PORTAL_BULK_RUN_INLINE, else in a thread."""
    if settings.PORTAL_BULK_RUN_INLINE:
        run(job.pk, key)
        return
    thread = threading.Thread(target=_run_in_thread, args=(job.pk, key), name=f"bulk-{job.pk}", daemon=True)
    thread.start()


def _run_in_thread(job_id: uuid.UUID, key: bytes) -> None:
    try:
        run(job_id, key)
    except Exception:
        logger.exception("bulk registration %s stopped", job_id)
    finally:
        connection.close()


def _bound(job_id: uuid.UUID, line: int) -> str:
    return f"portal-bulk:{job_id}:{line}"


def run(job_id: uuid.UUID, key: bytes) -> None:
    job = BulkJob.objects.select_related("created_by").get(pk=job_id)
    finished = set(BulkResult.objects.filter(job=job).values_list("line", flat=True))
    for row in job.rows:
        if row["line"] in finished:
            continue
        outcome = _register_row(job, row)
        with transaction.atomic():
            BulkResult.objects.create(
                job=job,
                line=row["line"],
                succeeded=not outcome["error"],
                sealed=sealed.encrypt(key, json.dumps(outcome).encode(), _bound(job.pk, row["line"])),
            )
            counts = BulkResult.objects.filter(job=job)
            BulkJob.objects.filter(pk=job.pk).update(
                done=counts.count(),
                failed=counts.filter(succeeded=False).count(),
                heartbeat_at=timezone.now(),
            )
    BulkJob.objects.filter(pk=job.pk, status=BulkJobStatus.RUNNING).update(
        status=BulkJobStatus.FINISHED, finished_at=timezone.now()
    )


def _register_row(job: BulkJob, row: dict[str, Any]) -> dict[str, Any]:
    outcome: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS, "")
    outcome.update(line=row["line"], name=row["name"], hardware_id=row["hardware_id"])
    wanted = RegistrationRequest(
        name=row["name"],
        hardware_id=row["hardware_id"] or None,
        key_type=KeyType(row["key_type"]),
        metadata=row["metadata"],
    )
    try:
        if row.get(DELIVERY) == vocabulary.DELIVERY_EST:
            awaiting = register_for_enrollment(wanted, actor=job.created_by, address=job.address)
        else:
            registration = register_device(wanted, actor=job.created_by, address=job.address)
    except ServiceError as error:
        outcome.update(status="error", error=error.message)
        return outcome
    except Exception:
        logger.exception("bulk registration %s: line %s failed", job.pk, row["line"])
        outcome.update(status="error", error="An unexpected error stopped this row; see the server log.")
        return outcome
    if row.get(DELIVERY) == vocabulary.DELIVERY_EST:
        outcome.update(
            device_id=str(awaiting.device.id),
            status=awaiting.device.status,
            enrollment_code=awaiting.enrollment_code,
            enrollment_code_expires_at=awaiting.enrollment_code_expires_at.isoformat(),
        )
        return outcome
    outcome.update(
        device_id=str(registration.device.id),
        status=registration.device.status,
        download_url=registration.bundle.url,
        bundle_password=registration.bundle.password,
        link_expires_at=registration.bundle.link.expires_at.isoformat(),
    )
    return outcome


class ResultsUnavailable(Exception):
    pass


def collect(job: BulkJob, key: bytes) -> bytes:
    """The results CSV, once: opened, handed over, and the ciphertext deleted."""
    if job.status != BulkJobStatus.FINISHED and not is_interrupted(job):
        raise ResultsUnavailable("The job has not finished.")
    rows = []
    for result in BulkResult.objects.filter(job=job).order_by("line"):
        try:
            rows.append(json.loads(sealed.decrypt(key, bytes(result.sealed), _bound(job.pk, result.line))))
        except sealed.Unreadable:
            raise ResultsUnavailable(
                "These results can be opened only in the browser session that started the job."
            ) from None
    with transaction.atomic():
        taken = BulkJob.objects.filter(pk=job.pk, collected_at__isnull=True).update(
            collected_at=timezone.now(), status=BulkJobStatus.COLLECTED, rows=[]
        )
        if not taken:
            raise ResultsUnavailable("The results were already downloaded; they are offered once.")
        BulkResult.objects.filter(job=job).delete()
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(safe_row(row, RESULT_COLUMNS) for row in rows)
    return out.getvalue().encode()
