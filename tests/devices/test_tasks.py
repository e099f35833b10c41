"""The periodic jobs, in process and on a real Celery worker with a real Redis."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import time_machine
from cryptography import x509
from django.conf import settings as django_settings

import pki.crl
from broker.tasks import refresh_crl_task, sync_broker_task
from devices.tasks import cleanup_bundles_task, expire_certificates_task
from pki.crl import publish_crl
from pki.issuance import issue_certificate
from pki.keystore import CertificateAuthority, forget_loaded_ca
from pki.models import Certificate, CertificateStatus
from pki.profiles import KeyType
from tests.support.workers import REDIS_URL, celery_worker


def crl_number(path: Path) -> int:
    return pki.crl.crl_number(x509.load_pem_x509_crl(path.read_bytes()))


def test_crl_job_resigns_near_next_update_and_not_before(
    ca: CertificateAuthority, crl_file: Path, broker_files: None, settings: Any
) -> None:
    publish_crl()
    first = crl_number(crl_file)
    assert refresh_crl_task.delay().get() is None  # fresh: nothing to do
    near_next_update = dt.datetime.now(dt.UTC) + dt.timedelta(hours=settings.CRL_VALIDITY_HOURS - 1)
    with time_machine.travel(near_next_update):
        assert refresh_crl_task.delay().get() == first + 1
    assert Path(settings.BROKER_CRL_FILE).read_bytes() == crl_file.read_bytes()


def test_expiry_and_cleanup_jobs(ca: CertificateAuthority, broker_files: None, settings: Any) -> None:
    settings.CERT_VALIDITY_DAYS = 1
    record = issue_certificate("short", key_type=KeyType.EC_P256).record
    assert expire_certificates_task.delay().get() == 0
    with time_machine.travel(record.not_after + dt.timedelta(minutes=1)):
        assert expire_certificates_task.delay().get() == 1
    assert Certificate.objects.get(pk=record.pk).status == CertificateStatus.EXPIRED
    assert cleanup_bundles_task.delay().get() == 0
    assert len(sync_broker_task.delay().get()) == 64


def test_beat_schedule_names_registered_tasks() -> None:
    from onboarding.celery import app

    app.loader.import_default_modules()
    for entry in django_settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_crl_job_through_redis(
    session_ca_root: Path, settings: Any, tmp_path: Path
) -> None:
    import redis
    from celery import Celery

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:  # .ci/run starts Redis; a developer machine must have it too
        pytest.fail(f"Redis is needed at {REDIS_URL} ({exc}); `.ci/run` starts one.")
    settings.CA_ROOT_PATH = session_ca_root
    forget_loaded_ca()
    crl_path = session_ca_root / "crl.pem"
    before = crl_number(crl_path)
    settings.BROKER_ACL_FILE = tmp_path / "mosquitto.acl"
    settings.BROKER_CRL_FILE = tmp_path / "mosquitto-crl.pem"
    settings.BROKER_PROBE_DIR = tmp_path / "probe"
    with celery_worker():
        # A client of its own, as a web process with CELERY_BROKER_URL set would be.
        sender = Celery("test-sender", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
        number = sender.send_task("onboarding.refresh_crl", kwargs={"force": True}).get(timeout=60)
    assert number == before + 1
    assert crl_number(crl_path) == before + 1  # signed by the worker process, on disk
    forget_loaded_ca()
