"""A browser's GET of a download link shows a page whose button POSTs to download; the GET uses
nothing up (issue #16, item 12: a chat previewer's GET used up a one-time link). Programs keep
their direct GET download. A revoked device's link says so (issue #21, item 6).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from devices.models import DownloadAttempt, DownloadLink
from tests.support.api import link_path, register
from tests.support.helpers import open_bundle

# What link-expanding bots send: browser-like Accept headers with their own user agents.
PREVIEWERS = {
    "slack": ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "text/html"),
    "slack-browser-accept": (
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    "teams": (
        "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 skype-url-preview@microsoft.com",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    "discord": (
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/webp,*/*;q=0.8",
    ),
    "chromium": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    ),
}
# What programs send: they download at once.
PROGRAMS = {
    "curl": ("curl/8.5.0", "*/*"),
    "onboard-cli": ("onboard-cli", "application/json"),
    "zip": ("python-httpx/0.28", "application/zip"),
    "none": ("", None),
}


def assert_untouched(link: DownloadLink) -> None:
    link.refresh_from_db()
    assert link.used_at is None and link.withdrawn_at is None
    assert not DownloadAttempt.objects.exists()  # not even recorded as an attempt


def assert_no_inline_code(html: str) -> None:
    """Works under a strict Content-Security-Policy (script-src 'self', no unsafe-inline)."""
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html)  # no inline script body
    assert not re.search(r"\son[a-z]+\s*=", html)  # no event handler attributes
    assert " style=" not in html and "<style" not in html
    assert "javascript:" not in html


@pytest.mark.parametrize("who", list(PREVIEWERS))
def test_a_previewer_or_browser_get_shows_a_page_and_uses_nothing_up(
    operator_api: APIClient, who: str
) -> None:
    answer = register(operator_api, name="meter-7")
    user_agent, accept = PREVIEWERS[who]
    link = DownloadLink.objects.get()
    for _ in range(3):  # previewers often fetch twice or more
        page = APIClient().get(link_path(answer), HTTP_ACCEPT=accept, HTTP_USER_AGENT=user_agent)
        assert page.status_code == 200
        assert page["Content-Type"].startswith("text/html")
        assert page["Cache-Control"] == "no-store" and page["Referrer-Policy"] == "no-referrer"
        html = page.content.decode()
        assert "meter-7" in html and 'method="post"' in html and "Download the bundle" in html
        assert_no_inline_code(html)
        assert_untouched(link)
    # The link still works, once, for whoever presses the button.
    assert open_bundle(APIClient(), answer)["device.crt"]


@pytest.mark.parametrize("who", list(PROGRAMS))
def test_programs_download_with_a_get(operator_api: APIClient, who: str) -> None:
    answer = register(operator_api)
    user_agent, accept = PROGRAMS[who]
    headers: dict[str, Any] = {"HTTP_USER_AGENT": user_agent, **({"HTTP_ACCEPT": accept} if accept else {})}
    first = APIClient().get(link_path(answer), **headers)
    assert first.status_code == 200 and first["Content-Type"] == "application/zip"
    assert first.content.startswith(b"PK")
    again = APIClient().get(link_path(answer), **headers)
    assert again.status_code == 410 and again.json()["error"]["code"] == "link_used"


def test_the_button_posts_downloads_once_and_the_page_then_says_used(operator_api: APIClient) -> None:
    answer = register(operator_api)
    browser: dict[str, Any] = {
        "HTTP_ACCEPT": PREVIEWERS["chromium"][1],
        "HTTP_USER_AGENT": PREVIEWERS["chromium"][0],
    }
    assert APIClient().get(link_path(answer), **browser).status_code == 200
    # No CSRF token and no session: the token in the address is the only credential.
    downloaded = APIClient(enforce_csrf_checks=True).post(link_path(answer), **browser)
    assert downloaded.status_code == 200 and downloaded["Content-Type"] == "application/zip"
    assert downloaded["Content-Disposition"].startswith("attachment;")
    assert DownloadAttempt.objects.get().outcome == "success"
    reloaded = APIClient().get(link_path(answer), **browser)
    assert reloaded.status_code == 410 and "already used" in reloaded.content.decode()
    twice = APIClient().post(link_path(answer), **browser)
    assert twice.status_code == 410 and "already used" in twice.content.decode()


def test_head_stays_refused(operator_api: APIClient) -> None:
    answer = register(operator_api)
    head = APIClient().head(link_path(answer), HTTP_ACCEPT="text/html")
    assert head.status_code == 405 and "HEAD" not in head["Allow"] and "POST" in head["Allow"]
    assert_untouched(DownloadLink.objects.get())


def test_a_revoked_device_link_says_the_device_was_revoked(operator_api: APIClient) -> None:
    answer = register(operator_api)
    operator_api.post(f"/revoke/{answer['id']}", {"reason": "keyCompromise"}, format="json")
    page = APIClient().get(link_path(answer), HTTP_ACCEPT="text/html")
    assert page.status_code == 410 and "The device was revoked" in page.content.decode()
    assert "newer bundle" not in page.content.decode()
    program = APIClient().get(link_path(answer))
    assert program.status_code == 410
    assert program.json()["error"]["code"] == "device_revoked"
    assert DownloadAttempt.objects.get().outcome == "revoked"
