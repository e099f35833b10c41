"""The portal in a real browser: Playwright driving Debian's headless chromium against
pytest-django's live server.

Sign-in needs the second factor; an operator registers a device and sees its password once,
then revokes it; an auditor reads the history but cannot revoke. Screenshots of the dashboard
and the device page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.portal import password_step, sign_in, staff

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

pytestmark = pytest.mark.django_db(transaction=True)


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_password_alone_reaches_neither_portal_nor_admin(portal: str, page: Any) -> None:
    staff("pat", "Operators", is_staff=True)
    password_step(page, portal, "pat")
    page.wait_for_url(re.compile(r"/portal/login/verify/$"))
    page.goto(f"{portal}/portal/")
    assert re.search(r"/portal/login/\?next=", page.url)
    page.goto(f"{portal}/admin/")
    assert "/admin/login/" in page.url
    assert page.get_by_role("heading", name="Staff sign-in").count() == 0  # the admin's own login form


def test_password_and_totp_sign_in_reaches_the_dashboard(portal: str, page: Any, settings: Any) -> None:
    from devices.lifecycle import revoke_device
    from devices.registration import RegistrationRequest, register_device
    from pki.profiles import KeyType

    user = staff("tina", "Operators", is_staff=True)
    # Something to show: devices whose certificates end within the chart's 30 days, one revoked.
    for index, days in enumerate([3, 9, 9, 20, 400]):
        settings.CERT_VALIDITY_DAYS = days
        device = register_device(
            RegistrationRequest(name=f"meter-{index}", key_type=KeyType.EC_P256), actor=user
        ).device
    revoke_device(device, actor=user)
    sign_in(page, portal, user)
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    assert page.locator("svg.chart").is_visible()
    screenshot(page, "dashboard.png")
    page.goto(f"{portal}/admin/")
    assert page.get_by_role("link", name="Devices").first.is_visible()  # admin index, no login form


def test_first_sign_in_enrols_an_authenticator(portal: str, page: Any) -> None:
    import base64

    from django_otp.oath import totp

    staff("nina", "Auditors", enrolled=False)
    password_step(page, portal, "nina")
    page.wait_for_url(re.compile(r"/portal/login/enrol/$"))
    assert page.locator("figure.qr svg").is_visible()
    key = base64.b32decode(page.locator("#totp-secret").inner_text().strip())
    page.get_by_label("Authentication code").fill(f"{totp(key):06d}")
    page.get_by_role("button", name="Confirm").click()
    assert page.get_by_role("heading", name="Your backup codes").is_visible()
    assert page.locator("#backup-codes li").count() == 8
    page.get_by_role("link", name="I have saved them: continue").click()
    page.wait_for_url(re.compile(r"/portal/$"))


def test_operator_registers_sees_the_password_once_and_revokes(portal: str, page: Any) -> None:
    user = staff("otto", "Operators")
    sign_in(page, portal, user)
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Register").click()
    page.get_by_label("Name").fill("boiler-7")
    page.get_by_label("Hardware id (optional)").fill("SN-0007")
    page.get_by_label("Key type").select_option("ec-p256")
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r"/portal/credentials/"))
    password = page.get_by_test_id("bundle-password").inner_text().strip()
    link = page.get_by_test_id("download-url").inner_text().strip()
    assert re.fullmatch(r"([A-Z2-7]{4}-){7}[A-Z2-7]{4}", password)
    assert "/download/" in link
    assert page.get_by_text("shown only once").is_visible()

    page.reload()
    assert page.get_by_role("heading", name="These credentials were already shown").is_visible()
    assert password not in page.content() and link not in page.content()

    page.goto(f"{portal}/portal/devices/?q=SN-0007")
    page.get_by_role("link", name="boiler-7").click()
    page.wait_for_url(re.compile(r"/portal/devices/[0-9a-f-]{36}/$"))
    screenshot(page, "device.png")
    page.set_viewport_size({"width": 820, "height": 1180})  # a tablet, portrait
    assert page.get_by_role("link", name="Revoke").is_visible()
    screenshot(page, "device-tablet.png")
    page.set_viewport_size({"width": 1280, "height": 860})
    page.get_by_role("link", name="Revoke").click()
    page.get_by_label("Reason").select_option("keyCompromise")
    page.get_by_label(re.compile("I understand")).check()
    page.get_by_role("button", name="Revoke device").click()
    page.wait_for_url(re.compile(r"/portal/devices/[0-9a-f-]{36}/$"))
    assert page.locator("h1 .badge").inner_text() == "Revoked"
    assert page.get_by_text("keyCompromise").first.is_visible()


def test_auditor_sees_history_but_cannot_revoke(portal: str, page: Any) -> None:
    from devices.registration import RegistrationRequest, register_device
    from pki.profiles import KeyType

    operator = staff("olaf", "Operators", enrolled=False)
    device = register_device(
        RegistrationRequest(name="watched-meter", key_type=KeyType.EC_P256), actor=operator
    ).device
    auditor = staff("audrey", "Auditors")
    sign_in(page, portal, auditor)
    page.goto(f"{portal}/portal/devices/{device.id}/")
    assert page.get_by_role("cell", name="Device registered").is_visible()
    assert page.get_by_role("cell", name="olaf").first.is_visible()
    assert page.get_by_role("link", name="Revoke").count() == 0
    assert page.get_by_role("link", name="Re-issue certificate").count() == 0
    refused = page.goto(f"{portal}/portal/devices/{device.id}/revoke/")
    assert refused is not None and refused.status == 403
    assert page.get_by_role("heading", name="Not allowed").is_visible()
