"""Registration is all or nothing: a failure at any step leaves the database, CRL and files as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.test import APIClient

from devices import delivery
from devices import services as device_services
from devices.models import Device, DownloadLink
from pki import services as pki_services
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
    "key generation": (device_services, "_prepare_key"),
    "device row": (Device.objects, "create"),
    "lint before signing": (pki_services, "_lint_before_signing"),
    "certificate row": (Certificate.objects, "create"),
    "issuance": (device_services, "issue_certificate"),
    "activation": (device_services, "_activate"),
    "bundle": (device_services, "create_bundle"),
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
