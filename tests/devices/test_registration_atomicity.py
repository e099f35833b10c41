"""Registration is all or nothing: a failure at any step leaves the database, CRL and files as before."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from devices import delivery, lifecycle, registration
from devices import models as device_models
from devices.models import Device, DownloadLink
from pki import issuance
from pki.models import Certificate, CertificateRevocationList


class InjectedFailure(RuntimeError):
    pass


def fail(*args: object, **kwargs: object) -> None:
    raise InjectedFailure("injected")


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


STEPS = {
    "key generation": (registration, "prepare_key"),
    "device row": (Device, "save"),
    "lint before signing": (issuance, "_lint_before_signing"),
    "certificate row": (Certificate.objects, "create"),
    "signing": (registration, "sign_certificate"),
    "certificate record": (registration, "record_certificate"),
    "audit event": (device_models, "record"),
    "bundle": (registration, "package"),
    "link and files": (registration, "open_link"),
    "link row": (DownloadLink.objects, "create"),
    "bundle files": (delivery, "write_atomically"),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_failure_at_each_step_leaves_nothing(
    step: str, operator_api: APIClient, monkeypatch: pytest.MonkeyPatch, session_ca_root: Path
) -> None:
    operator_api.raise_request_exception = False
    before_files = snapshot(session_ca_root)
    before = (
        Device.objects.count(),
        Certificate.objects.count(),
        CertificateRevocationList.objects.count(),
        DownloadLink.objects.count(),
    )
    target, attribute = STEPS[step]
    monkeypatch.setattr(target, attribute, fail)

    response = operator_api.post("/register", {"name": "doomed", "hardware_id": "HW-doomed"}, format="json")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert b"Traceback" not in response.content
    assert (
        Device.objects.count(),
        Certificate.objects.count(),
        CertificateRevocationList.objects.count(),
        DownloadLink.objects.count(),
    ) == before
    assert snapshot(session_ca_root) == before_files
    monkeypatch.undo()
    # Nothing half-done blocks a retry: the hardware id is free.
    assert operator_api.post("/register", {"name": "ok", "hardware_id": "HW-doomed", "key_type": "ec-p256"},
                             format="json").status_code == 201  # fmt: skip


def test_failed_reissue_leaves_the_crl_and_the_old_certificate_alone(
    operator_api: APIClient, monkeypatch: pytest.MonkeyPatch, session_ca_root: Path
) -> None:
    operator_api.raise_request_exception = False
    device_id = operator_api.post("/register", {"name": "r", "key_type": "ec-p256"}, format="json").json()[
        "id"
    ]
    crl_before = (session_ca_root / "crl.pem").read_bytes()
    old = Certificate.objects.get(device_id=device_id)
    monkeypatch.setattr(lifecycle, "create_bundle", fail)
    response = operator_api.post(f"/api/v1/devices/{device_id}/reissue", {}, format="json")
    assert response.status_code == 500
    old.refresh_from_db()
    assert old.status == "active"
    assert Certificate.objects.filter(device_id=device_id).count() == 1
    assert (session_ca_root / "crl.pem").read_bytes() == crl_before


def test_a_claim_is_409_while_its_request_runs_and_taken_over_once_it_is_gone(
    operator_api: APIClient,
) -> None:
    from devices.idempotency import claim_lock_name
    from devices.models import IdempotentRequest
    from tests.support.helpers import lock_held_elsewhere

    key = "a-key-for-two-requests-0001"
    digest = _digest_for(operator_api, key)
    # The first request's claim is there, its answer is not.
    IdempotentRequest.objects.create(
        key_digest=digest,
        request_digest=_body_digest({"name": "twin"}),
        status_code=0,
        encrypted_response=b"",
    )

    def send() -> Any:
        return operator_api.post("/register", {"name": "twin"}, format="json", HTTP_IDEMPOTENCY_KEY=key)

    with lock_held_elsewhere(claim_lock_name(digest)):  # ... and that request is still running
        response = send()
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "request_in_progress"
        assert Device.objects.count() == 0
    # Its process died (the lock went with it): the claim is taken over at once, not 10 minutes later.
    taken_over = send()
    assert taken_over.status_code == 201, taken_over.content
    assert Device.objects.count() == 1
    replayed = send()
    assert replayed.status_code == 201 and replayed["Idempotent-Replayed"] == "true"
    assert replayed.json()["id"] == taken_over.json()["id"] and Device.objects.count() == 1


def _digest_for(client: APIClient, key: str) -> str:
    from django.contrib.auth.models import User

    from devices.idempotency import _key_digest

    return _key_digest(User.objects.get(username="operators-user").pk, key)


def _body_digest(body: dict[str, str]) -> str:
    from devices.idempotency import _request_digest

    return _request_digest(body)


def test_a_bundle_carries_the_certificate_recorded_after_a_serial_collision(
    operator_api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bundle is built before the transaction; should another process record the same
    # serial meanwhile, the certificate is signed again and the bundle must carry that one.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from pki.profiles import KeyType
    from tests.support.helpers import open_bundle

    fresh = x509.random_serial_number()
    real_record = issuance.record_certificate

    def another_process_records_the_serial_first(
        signed: issuance.SignedCertificate, *, device_id: uuid.UUID | None = None
    ) -> issuance.IssuedCertificate:
        monkeypatch.setattr(x509, "random_serial_number", lambda: signed.certificate.serial_number)
        issuance.record_certificate(issuance.sign_certificate("another", key_type=KeyType.EC_P256))
        monkeypatch.setattr(x509, "random_serial_number", lambda: fresh)
        return real_record(signed, device_id=device_id)

    monkeypatch.setattr(registration, "record_certificate", another_process_records_the_serial_first)

    answer = operator_api.post("/register", {"name": "collided"}, format="json").json()

    recorded = Certificate.objects.get(device_id=answer["id"])
    assert recorded.serial_number == fresh
    files = open_bundle(operator_api, answer)
    bundled = x509.load_pem_x509_certificate(files["device.crt"])
    assert bundled.serial_number == fresh
    assert files["device.crt"].decode() == recorded.pem
    assert load_pem_private_key(files["device.key"], None).public_key() == bundled.public_key()


def test_refused_requests_leave_no_lock_behind(
    operator_api: APIClient, settings: Any, tmp_path: Path
) -> None:
    """Every Idempotency-Key is locked while its request runs: a lock file on SQLite (refused
    requests, 400 or 409, used to leave theirs behind, one file per key for as long as a client
    sent them), an advisory lock of the session on PostgreSQL."""
    settings.LOCK_DIR = tmp_path / "locks"
    for number in range(5):
        headers: dict[str, Any] = {"HTTP_IDEMPOTENCY_KEY": f"refused-request-key-{number:04d}"}
        assert operator_api.post("/register", {"name": ""}, format="json", **headers).status_code == 400
    headers = {"HTTP_IDEMPOTENCY_KEY": "accepted-request-key-0001"}
    assert operator_api.post("/register", {"name": "kept"}, format="json", **headers).status_code == 201
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            assert cursor.fetchone()[0] == 0
    else:
        assert sorted(path.name for path in settings.LOCK_DIR.glob("idempotency-*")) == []
