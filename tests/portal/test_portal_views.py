"""The operator portal's pages: dashboard, devices, register (credentials shown once), revoke,
re-issue, new links, with the service's errors shown in the form."""

from __future__ import annotations

from typing import Any

from django.test import Client

from audit.models import AuditEvent
from devices.lifecycle import revoke_device
from devices.models import Device, DeviceStatus, DownloadLink
from devices.registration import RegistrationRequest, register_device
from pki.keystore import CertificateAuthority
from pki.models import Certificate, CertificateStatus
from pki.profiles import KeyType
from tests.support.portal import hidden, hidden_text, register_through_form


def test_register_shows_the_password_once_and_never_stores_it(operator: Client) -> None:
    answer = register_through_form(
        operator, name="boiler-7", hardware_id="SN-7", metadata="site=Lyon\nfloor=2"
    )
    assert answer.status_code == 303
    reveal_url = answer["Location"]
    assert reveal_url.startswith("/portal/credentials/")
    device = Device.objects.get(hardware_id="SN-7")
    assert device.metadata == {"site": "Lyon", "floor": "2"}

    shown = operator.get(reveal_url)
    assert shown.status_code == 200
    assert shown["Cache-Control"] == "no-store"
    html = shown.content.decode()
    assert "shown only once" in html
    password = hidden_text(html, "bundle-password")
    url = hidden_text(html, "download-url")
    assert len(password.replace("-", "")) == 32 and "/download/" in url

    # Stored nowhere readable: not in the session, not in any table this test can see.
    from django.contrib.sessions.models import Session

    for session in Session.objects.all():
        assert password not in str(session.get_decoded())
    again = operator.get(reveal_url)
    assert again.status_code == 410
    assert password not in again.content.decode()
    # The link works, with that password.
    from tests.support.helpers import open_bundle

    files = open_bundle(Client(), {"download_url": url, "bundle_password": password})
    assert set(files) >= {"device.crt", "ca.crt", "device.json"}


def test_a_resent_register_form_registers_nothing_twice(operator: Client) -> None:
    page = operator.get("/portal/devices/register/")
    data = {"name": "twice", "key_type": "ec-p256", "submission": hidden(page.content.decode(), "submission")}
    assert operator.post("/portal/devices/register/", data).status_code == 303
    resent = operator.post("/portal/devices/register/", data)
    assert resent.status_code == 302 and resent["Location"] == "/portal/devices/"
    assert Device.objects.filter(name="twice").count() == 1


def test_service_errors_are_shown_in_the_form(operator: Client) -> None:
    register_through_form(operator, name="first", hardware_id="SN-1")
    answer = register_through_form(operator, name="second", hardware_id="SN-1")
    assert answer.status_code == 200
    assert "already registered" in answer.content.decode()
    bad_csr = register_through_form(operator, name="third", csr="-----BEGIN CERTIFICATE REQUEST-----\nnope\n")
    assert bad_csr.status_code == 200
    assert "CSR" in bad_csr.content.decode()
    assert Device.objects.count() == 1


def test_register_with_an_uploaded_csr(operator: Client) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from django.core.files.uploadedfile import SimpleUploadedFile

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "ignored")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    page = operator.get("/portal/devices/register/")
    answer = operator.post(
        "/portal/devices/register/",
        {
            "name": "own-key",
            "key_type": "rsa2048",
            "submission": hidden(page.content.decode(), "submission"),
            "csr_file": SimpleUploadedFile("device.csr", csr),
        },
    )
    assert answer.status_code == 303
    certificate = Certificate.objects.get(device__name="own-key")
    assert certificate.from_csr and certificate.key_type == "ec-p256"


def test_revoke_needs_a_reason_and_confirmation(operator: Client) -> None:
    register_through_form(operator, name="to-revoke")
    device = Device.objects.get(name="to-revoke")
    page = operator.get(f"/portal/devices/{device.id}/revoke/")
    assert page.status_code == 200 and "Revoke to-revoke?" in page.content.decode()
    unconfirmed = operator.post(f"/portal/devices/{device.id}/revoke/", {"reason": "keyCompromise"})
    assert unconfirmed.status_code == 200
    device.refresh_from_db()
    assert device.status == DeviceStatus.ACTIVE
    done = operator.post(f"/portal/devices/{device.id}/revoke/", {"reason": "keyCompromise", "confirm": "on"})
    assert done.status_code == 302
    device.refresh_from_db()
    assert device.status == DeviceStatus.REVOKED
    assert Certificate.objects.get(device=device).revocation_reason == "keyCompromise"
    event = AuditEvent.objects.get(action="device.revoked")
    assert event.actor_name == "olga" and event.address == "127.0.0.1"


def test_reissue_and_new_link_show_fresh_credentials_once(operator: Client) -> None:
    register_through_form(operator, name="rotating")
    device = Device.objects.get(name="rotating")
    page = operator.get(f"/portal/devices/{device.id}/reissue/")
    answer = operator.post(
        f"/portal/devices/{device.id}/reissue/",
        {"key_type": "", "submission": hidden(page.content.decode(), "submission")},
    )
    assert answer.status_code == 303
    assert operator.get(answer["Location"]).status_code == 200
    statuses = sorted(Certificate.objects.filter(device=device).values_list("status", flat=True))
    assert statuses == [CertificateStatus.ACTIVE, CertificateStatus.REVOKED]

    page = operator.get(f"/portal/devices/{device.id}/link/")
    answer = operator.post(
        f"/portal/devices/{device.id}/link/", {"submission": hidden(page.content.decode(), "submission")}
    )
    assert answer.status_code == 303
    assert "download-url" in operator.get(answer["Location"]).content.decode()
    assert DownloadLink.objects.filter(device=device, withdrawn_at__isnull=True).count() == 1


def test_device_list_searches_and_filters(operator: Client) -> None:
    for index in range(3):
        register_device(
            RegistrationRequest(name=f"meter-{index}", hardware_id=f"HW-{index}", key_type=KeyType.EC_P256)
        )
    revoked = Device.objects.get(name="meter-2")
    revoke_device(revoked)
    serial = Certificate.objects.get(device__name="meter-1").serial

    def names(query: str) -> set[str]:
        html = operator.get(f"/portal/devices/?{query}").content.decode()
        return {f"meter-{index}" for index in range(3) if f">meter-{index}<" in html}

    assert names("") == {"meter-0", "meter-1", "meter-2"}
    assert names("q=HW-0") == {"meter-0"}
    assert names(f"q={serial}") == {"meter-1"}
    assert names(f"q={revoked.id}") == {"meter-2"}
    assert names("status=revoked") == {"meter-2"}
    assert names("status=active&q=meter") == {"meter-0", "meter-1"}


def test_device_list_paginates(operator: Client) -> None:
    Device.objects.bulk_create(Device(name=f"d{index:03d}") for index in range(30))
    first = operator.get("/portal/devices/").content.decode()
    assert "Page 1 of 2" in first and 'rel="next"' in first
    assert "Page 2 of 2" in operator.get("/portal/devices/?page=2").content.decode()


def test_device_page_shows_certificate_topics_and_history(operator: Client) -> None:
    register_through_form(operator, name="detailed", hardware_id="HW-D")
    device = Device.objects.get(name="detailed")
    html = operator.get(f"/portal/devices/{device.id}/").content.decode()
    certificate = Certificate.objects.get(device=device)
    assert certificate.serial in html.replace("<wbr>", "")  # ids may break at <wbr>
    assert f"devices/{device.id}/#" in html
    assert "Device registered" in html  # audit history
    assert "Revoke" in html and "Re-issue certificate" in html
    assert operator.get("/portal/devices/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_auditor_sees_history_without_actions(operator: Client, auditor: Client) -> None:
    register_through_form(operator, name="watched")
    device = Device.objects.get(name="watched")
    html = auditor.get(f"/portal/devices/{device.id}/").content.decode()
    assert "Device registered" in html
    assert f"/portal/devices/{device.id}/revoke/" not in html
    assert "Re-issue certificate" not in html
    assert "/portal/devices/register/" not in auditor.get("/portal/devices/").content.decode()
    assert auditor.get(f"/portal/devices/{device.id}/revoke/").status_code == 403
    refused = auditor.post(f"/portal/devices/{device.id}/revoke/", {"reason": "unspecified", "confirm": "on"})
    assert refused.status_code == 403
    device.refresh_from_db()
    assert device.status == DeviceStatus.ACTIVE


def test_dashboard_counts_expiry_crl_broker_and_activity(operator: Client) -> None:
    register_through_form(operator, name="on-dashboard")
    html = operator.get("/portal/").content.decode()
    assert "Fleet" in html and "<svg" in html and "Expiring certificates per week" in html
    assert "Revocation list (CRL)" in html and "Fresh" in html
    assert "Device registered" in html


def test_expiry_chart_buckets(ca: CertificateAuthority, settings: Any) -> None:
    import datetime as dt

    import time_machine

    from portal.dashboard import expiry_bars

    settings.CERT_VALIDITY_DAYS = 10
    register_device(RegistrationRequest(name="soon", key_type=KeyType.EC_P256))
    now = dt.datetime.now(dt.UTC)
    bars, top, total = expiry_bars(now)
    assert total == 1 and [bar.count for bar in bars] == [0, 1, 0, 0, 0] and top == 1
    assert bars[1].height == 100 and bars[0].height == 0
    with time_machine.travel(now + dt.timedelta(days=20)):
        assert expiry_bars(now + dt.timedelta(days=20))[2] == 0  # expired: no longer "expiring"


def test_pending_devices_are_shown_as_being_provisioned(operator: Client) -> None:
    device = Device.objects.create(name="queued", status=DeviceStatus.PENDING)
    assert "Being provisioned" in operator.get(f"/portal/devices/{device.id}/").content.decode()
    from devices.delivery import IssuedBundle, open_link
    from portal.views.devices import PENDING_NOTE, credential_for

    link = open_link(device, "token-for-a-pending-device-0123456789")
    item = credential_for(device, IssuedBundle(link=link, token="t" * 43, password="P" * 39))
    assert item.note == PENDING_NOTE


def test_a_failed_device_is_provisioned_again_from_its_page(
    operator: Client, auditor: Client, django_capture_on_commit_callbacks: Any
) -> None:
    device = Device.objects.create(
        name="stuck",
        status=DeviceStatus.FAILED,
        requested_key_type="ec-p256",
        failure_reason="CA was missing",
    )
    assert "Try again" not in auditor.get(f"/portal/devices/{device.id}/").content.decode()
    assert auditor.post(f"/portal/devices/{device.id}/retry/").status_code == 403
    detail = operator.get(f"/portal/devices/{device.id}/").content.decode()
    assert "CA was missing" in detail and "Try again" in detail

    page = operator.get(f"/portal/devices/{device.id}/retry/")
    with django_capture_on_commit_callbacks(execute=True):  # the task runs in-process here
        answer = operator.post(
            f"/portal/devices/{device.id}/retry/", {"submission": hidden(page.content.decode(), "submission")}
        )

    assert answer.status_code == 303
    shown = operator.get(answer["Location"]).content.decode()
    assert "download-url" in shown
    device.refresh_from_db()
    assert device.status == DeviceStatus.ACTIVE and device.failure_reason == ""
    assert Certificate.objects.filter(device=device).count() == 1
    # Only failed devices can be retried.
    assert operator.get(f"/portal/devices/{device.id}/retry/").status_code == 302
