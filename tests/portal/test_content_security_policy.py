"""Content-Security-Policy on every answer, and pages that need no exception to it.

The header is checked on each kind of answer; the templates are checked for inline script,
inline event handlers and style attributes; and a real headless Chromium walks the portal (sign-in,
authenticator enrolment, dashboard, devices, registration, the credentials page, bulk upload, the
admin) and the Swagger UI, failing on any CSP violation it reports. A control injects an inline
handler to show that the browser enforces the policy and that the collector sees violations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.support import ROOT
from tests.support.portal import password_step, sign_in, staff

# The browser tests' fixtures (`browser`, `page`, `portal`: Debian's chromium, a tab, the live
# server with the session CA) come from tests/conftest.py.

TEMPLATES = ROOT / "templates"
VIOLATION = re.compile(r"Content Security Policy|Refused to (execute|load|apply|connect|frame)", re.I)


def directives(header: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


@pytest.mark.parametrize(
    "path", ["/", "/portal/login/", "/health", "/crl.pem", "/api/schema/", "/nothing-here", "/admin/login/"]
)
def test_every_answer_has_the_policy(ca: Any, broker_files: None, path: str) -> None:
    response = Client().get(path)
    policy = directives(response["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["form-action"] == ["'self'"]


def test_swagger_ui_gets_data_images_but_nothing_inline(db: Any) -> None:
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    policy = directives(response["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert re.search(rb"<script>|<style", response.content) is None  # start-up script and styles are files
    script = Client().get("/api/docs/?script=")
    assert script.status_code == 200 and b"SwaggerUIBundle" in script.content


INLINE = [
    ("inline script", re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)),
    ("inline event handler", re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)),
    ("style attribute", re.compile(r"<[^>]+\sstyle\s*=", re.I)),
    ("style element", re.compile(r"<style\b", re.I)),
    ("javascript: URL", re.compile(r"javascript:", re.I)),
]


@pytest.mark.parametrize("template", sorted(TEMPLATES.rglob("*.html")), ids=lambda path: path.name)
def test_templates_have_nothing_inline(template: Path) -> None:
    text = template.read_text()
    for what, pattern in INLINE:
        assert not pattern.search(text), f"{template.relative_to(TEMPLATES)} has an {what}"


# --- In a real browser ---


@pytest.fixture
def violations(page: Any) -> Iterator[list[str]]:
    """Every console message or page error that reports a CSP violation, as it arrives."""
    seen: list[str] = []

    def collect(text: str) -> None:
        if VIOLATION.search(text):
            seen.append(text)

    page.on("console", lambda message: collect(message.text))
    page.on("pageerror", lambda error: collect(str(error)))
    yield seen


def _visit(page: Any, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status < 500, (url, response and response.status)
    page.wait_for_load_state("load")


@pytest.mark.django_db(transaction=True)
def test_portal_pages_report_no_csp_violation(portal: str, page: Any, violations: list[str]) -> None:
    from devices.registration import RegistrationRequest, register_device
    from pki.profiles import KeyType

    _visit(page, f"{portal}/")
    # First sign-in: the enrolment page with its QR code, then the backup codes.
    newcomer = staff("csp-new", "Auditors", enrolled=False)
    password_step(page, portal, newcomer.username)
    page.wait_for_url(re.compile(r"/portal/login/enrol/$"))
    assert page.locator("figure.qr svg").is_visible()
    page.context.clear_cookies()

    user = staff("csp-admin", "Operators", is_staff=True, is_superuser=True)
    device = register_device(
        RegistrationRequest(name="csp-meter", key_type=KeyType.EC_P256), actor=user
    ).device
    sign_in(page, portal, user)
    for path in (
        "/portal/",
        "/portal/devices/",
        f"/portal/devices/{device.id}/",
        f"/portal/devices/{device.id}/revoke/",
        "/portal/bulk/",
        "/admin/",
        "/admin/devices/device/",
        f"/admin/devices/device/{device.id}/change/",
        "/portal/nothing-here",
    ):
        _visit(page, f"{portal}{path}")
    # The credentials page (copy buttons, portal.js) after a registration in the form.
    _visit(page, f"{portal}/portal/devices/register/")
    page.get_by_label("Name").fill("csp-boiler")
    page.get_by_label("Key type").select_option("ec-p256")
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r"/portal/credentials/"))
    assert page.get_by_test_id("bundle-password").is_visible()
    assert violations == []


@pytest.mark.django_db(transaction=True)
def test_swagger_ui_renders_under_its_policy(portal: str, page: Any, violations: list[str]) -> None:
    _visit(page, f"{portal}/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "IoT Device Onboarding API" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock-summary").first.wait_for()
    assert violations == []


@pytest.mark.django_db(transaction=True)
def test_an_injected_inline_handler_is_refused_and_reported(
    portal: str, page: Any, violations: list[str]
) -> None:
    _visit(page, f"{portal}/portal/login/")
    page.evaluate(
        """() => {
            const img = document.createElement("img");
            img.setAttribute("onerror", "document.title = 'pwned'");
            img.src = "/nothing.png";
            document.body.appendChild(img);
        }"""
    )
    page.wait_for_timeout(1000)
    assert page.title() != "pwned"
    assert any("inline event handler" in message for message in violations), violations
