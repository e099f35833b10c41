"""Signed-in sessions end after SESSION_IDLE_TIMEOUT_SECONDS idle and SESSION_ABSOLUTE_TIMEOUT_SECONDS
in all, for the portal, the admin and the session-authenticated API alike."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.support.portal import PASSWORD, current_code


@pytest.fixture
def signed_in_client(ca: Any, make_user: Any, settings: Any) -> Client:
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 600
    settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS = 3600
    user = make_user("timed", "Operators")
    user.is_staff = True
    user.save()
    call_command("enroll_totp", "timed", stdout=StringIO())
    client = Client()
    client.post("/portal/login/", {"username": "timed", "password": PASSWORD})
    client.post("/portal/login/verify/", {"code": current_code(TOTPDevice.objects.get(user=user))})
    assert client.get("/portal/").status_code == 200
    return client


def later(minutes: float) -> Any:
    return time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes), tick=False)


def test_idle_sessions_end(signed_in_client: Client) -> None:
    with later(9):
        assert signed_in_client.get("/portal/").status_code == 200
    with later(18):  # 9 minutes after the last request: still within the idle limit
        assert signed_in_client.get("/portal/devices/").status_code == 200
    with later(29):  # 11 minutes idle
        answer = signed_in_client.get("/portal/devices/")
        assert answer.status_code == 302 and answer["Location"].startswith("/portal/login/")
        assert "without activity" in signed_in_client.get(answer["Location"]).content.decode()
        assert signed_in_client.get("/admin/").status_code == 302
        assert signed_in_client.get("/api/v1/devices/").status_code in {401, 403}


def test_active_sessions_still_end_at_the_absolute_limit(signed_in_client: Client) -> None:
    for minutes in range(8, 60, 8):
        with later(minutes):
            assert signed_in_client.get("/portal/").status_code == 200
    with later(61):
        assert signed_in_client.get("/portal/").status_code == 302


def test_a_session_without_the_clock_is_not_trusted(ca: Any, make_user: Any, verified_login: Any) -> None:
    client = verified_login(Client(), make_user("clockless", "Operators"))
    session = client.session
    session.pop("portal_signed_in_at", None)
    session.pop("portal_last_seen_at", None)
    session.save()
    assert client.get("/portal/").status_code == 302


def test_expired_reason() -> None:
    from django.conf import settings

    from portal.middleware import LAST_SEEN_AT, SIGNED_IN_AT, expired_reason

    now = 1_000_000.0
    fresh = {SIGNED_IN_AT: now - 60, LAST_SEEN_AT: now - 30}
    assert expired_reason(fresh, now) is None
    idle = {SIGNED_IN_AT: now - 60, LAST_SEEN_AT: now - settings.SESSION_IDLE_TIMEOUT_SECONDS - 1}
    assert "without activity" in (expired_reason(idle, now) or "")
    old = {SIGNED_IN_AT: now - settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS - 1, LAST_SEEN_AT: now}
    assert "at most" in (expired_reason(old, now) or "")


def test_timeouts_come_from_the_environment(monkeypatch: Any) -> None:
    import subprocess
    import sys

    code = (
        "from django.conf import settings; import django; django.setup(); "
        "print(settings.SESSION_IDLE_TIMEOUT_SECONDS, settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS, "
        "settings.SESSION_COOKIE_AGE, settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, "
        "settings.SESSION_COOKIE_HTTPONLY)"
    )
    env = {
        "DJANGO_SETTINGS_MODULE": "onboarding.settings",
        "SESSION_IDLE_TIMEOUT_SECONDS": "120",
        "SESSION_ABSOLUTE_TIMEOUT_SECONDS": "7200",
        "DEBUG": "false",
        "SECRET_KEY": "k",
        "CA_KEY_PASSPHRASE": "p",
        "PATH": "/usr/bin:/bin",
    }
    import os

    env["DATA_DIR"] = os.environ["DATA_DIR"]
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    # Outside development the session and CSRF cookies are Secure and HttpOnly by default.
    assert out.stdout.split() == ["120", "7200", "7200", "True", "True", "True"]
