"""The one-time download link in a real browser (Playwright driving Debian's chromium against
the live server), under a strict Content-Security-Policy: opening the link shows a page and
uses nothing up; the button downloads the ZIP; reloading then says the link was used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pyzipper

from devices.models import DownloadAttempt, DownloadLink
from devices.registration import RegistrationRequest, register_device
from pki.profiles import KeyType

# The browser, the tab and the live portal (`browser`, `page`, `portal`) come from tests/conftest.py.

pytestmark = pytest.mark.django_db(transaction=True)

# What the strictest policy the portal could send allows: nothing inline, nothing from elsewhere.
STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def with_strict_csp(tab: Any, violations: list[str]) -> None:
    """Serve every page with STRICT_CSP and collect what the browser reports it blocked."""

    def add_policy(route: Any) -> None:
        if route.request.method == "GET" and route.request.resource_type == "document":
            answer = route.fetch()
            route.fulfill(response=answer, headers={**answer.headers, "content-security-policy": STRICT_CSP})
        else:
            route.continue_()

    tab.route("**/*", add_policy)
    tab.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security" in message.text else None,
    )


def test_open_the_link_press_the_button_get_the_zip_then_reload(
    portal: str, page: Any, tmp_path: Path
) -> None:
    registration = register_device(RegistrationRequest(name="boiler-7", key_type=KeyType.EC_P256))
    bundle = registration.bundle
    assert bundle is not None
    violations: list[str] = []
    with_strict_csp(page, violations)

    page.goto(bundle.url)
    assert page.get_by_role("heading", name="Credentials for boiler-7").is_visible()
    page.reload()  # opened twice (as a previewer and then a person might): still unused
    link = DownloadLink.objects.get()
    assert link.used_at is None and not DownloadAttempt.objects.exists()

    with page.expect_download() as started:
        page.get_by_role("button", name="Download the bundle").click()
    download = started.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.name == f"{registration.device.id}-credentials.zip"
    with pyzipper.AESZipFile(saved) as archive:
        archive.setpassword(bundle.password.encode())
        assert b"BEGIN CERTIFICATE" in archive.read("device.crt")

    link.refresh_from_db()
    assert link.used_at is not None
    attempt = DownloadAttempt.objects.get()
    assert attempt.outcome == "success" and "Chrome" in attempt.user_agent

    page.reload()
    assert page.get_by_role("heading", name="This link cannot be used").is_visible()
    assert "already used" in page.content()
    assert violations == []
