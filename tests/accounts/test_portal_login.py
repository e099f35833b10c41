"""Portal sign-in: password then second factor, first-time enrolment, replay, throttling, lockout."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuditEvent
from tests.support.portal import PASSWORD, current_code


@pytest.fixture
def operator(ca: Any, make_user: Any) -> Any:
    user = make_user("operator-1", "Operators")
    call_command("enroll_totp", "operator-1", stdout=StringIO())
    return user


def password_step(
    client: Client, username: str = "operator-1", password: str = PASSWORD, **extra: Any
) -> Any:
    return client.post(
        "/portal/login/", {"username": username, "password": password, "next": "/portal/devices/"}, **extra
    )


def code_step(client: Client, code: str, **extra: Any) -> Any:
    return client.post("/portal/login/verify/", {"code": code}, **extra)


def test_password_alone_signs_nobody_in(operator: Any) -> None:
    client = Client()
    answer = password_step(client)
    assert answer.status_code == 302 and answer["Location"] == "/portal/login/verify/"
    assert "_auth_user_id" not in client.session  # not signed in between the steps
    assert client.get("/portal/").status_code == 302
    assert client.get("/admin/").status_code == 302
    assert client.get("/api/v1/devices/").status_code in {401, 403}


def test_password_and_totp_sign_in_and_rotate_the_session(operator: Any) -> None:
    client = Client()
    client.get("/portal/login/")
    first_key = client.session.session_key
    password_step(client)
    middle_key = client.session.session_key
    device = TOTPDevice.objects.get(user=operator)
    answer = code_step(client, current_code(device))
    assert answer.status_code == 302 and answer["Location"] == "/portal/devices/"
    assert len({first_key, middle_key, client.session.session_key}) == 3
    assert client.get("/portal/").status_code == 200
    assert AuditEvent.objects.filter(action="login.succeeded", actor=operator).exists()
    # The same verified session works for the session-authenticated API.
    assert client.get("/api/v1/devices/").status_code == 200


def test_a_used_code_cannot_be_replayed(operator: Any) -> None:
    device = TOTPDevice.objects.get(user=operator)
    code = current_code(device)
    first = Client()
    password_step(first)
    assert code_step(first, code).status_code == 302
    device.refresh_from_db()
    assert device.last_t >= 0
    replay = Client()
    password_step(replay)
    refused = code_step(replay, code)
    assert refused.status_code == 200 and "not valid" in refused.content.decode()
    assert replay.get("/portal/").status_code == 302


def test_wrong_codes_are_throttled_recorded_and_count_towards_lockout(operator: Any) -> None:
    device = TOTPDevice.objects.get(user=operator)
    client = Client(REMOTE_ADDR="192.0.2.10")
    password_step(client)
    wrong = f"{(int(current_code(device)) + 1) % 10**6:06d}"
    assert code_step(client, wrong).status_code == 200
    device.refresh_from_db()
    assert device.throttling_failure_count == 1
    # Within the throttle delay even the right code is refused.
    throttled = code_step(client, current_code(device))
    assert "Too many wrong codes" in throttled.content.decode()
    failure = AuditEvent.objects.filter(action="login.otp_failed").first()
    assert failure is not None and failure.actor == operator and failure.address == "192.0.2.10"


def test_repeated_wrong_codes_lock_out_that_user_from_that_address(operator: Any, settings: Any) -> None:
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # isolate axes' lockout from django-otp's delay
    device = TOTPDevice.objects.get(user=operator)
    attacker = Client(REMOTE_ADDR="192.0.2.66")
    password_step(attacker)
    wrong = f"{(int(current_code(device)) + 1) % 10**6:06d}"
    answers = [code_step(attacker, wrong).status_code for _ in range(settings.AXES_FAILURE_LIMIT)]
    assert answers[-1] in {403, 429}
    assert password_step(attacker).status_code in {403, 429}
    # The operator, elsewhere, still signs in.
    colleague = Client(REMOTE_ADDR="198.51.100.20")
    password_step(colleague)
    assert code_step(colleague, current_code(device)).status_code == 302


def test_password_failures_lock_out_per_user_and_address(operator: Any, make_user: Any) -> None:
    make_user("someone-else", "Operators")
    attacker = Client(REMOTE_ADDR="192.0.2.99")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        password_step(attacker, password="guess-guess-guess")
    assert password_step(attacker).status_code in {403, 429}
    # Another account from the same address is not locked: no locking everyone out.
    assert password_step(attacker, username="someone-else").status_code == 302
    # The same account from another address is not locked either.
    assert password_step(Client(REMOTE_ADDR="203.0.113.5")).status_code == 302
    failed = AuditEvent.objects.filter(action="login.failed").first()
    assert failed is not None and failed.address == "192.0.2.99"


def test_a_backup_code_works_once(operator: Any) -> None:
    token = StaticToken.objects.filter(device__user=operator).first()
    assert token is not None
    client = Client()
    password_step(client)
    assert code_step(client, token.token).status_code == 302
    assert not StaticToken.objects.filter(pk=token.pk).exists()
    again = Client()
    password_step(again)
    assert code_step(again, token.token).status_code == 200


def test_first_sign_in_enrols_an_authenticator_and_shows_backup_codes_once(ca: Any, make_user: Any) -> None:
    user = make_user("newcomer", "Auditors")
    client = Client()
    answer = password_step(client, "newcomer")
    assert answer["Location"] == "/portal/login/enrol/"
    page = client.get("/portal/login/enrol/")
    html = page.content.decode()
    assert "no-store" in page["Cache-Control"]
    assert "<svg" in html and "<path" in html  # the QR code, inline
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', html)
    assert secret
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    import base64

    assert base64.b32decode(secret.group(1)) == device.bin_key
    # A reload shows the same secret (the unconfirmed device is reused).
    assert secret.group(1) in client.get("/portal/login/enrol/").content.decode()
    assert client.get("/portal/").status_code == 302  # not signed in before confirming

    wrong = client.post(
        "/portal/login/enrol/", {"code": "000000" if current_code(device) != "000000" else "111111"}
    )
    assert wrong.status_code == 200 and "not right" in wrong.content.decode()
    device.throttle_reset()
    confirmed = client.post("/portal/login/enrol/", {"code": current_code(device)})
    assert confirmed.status_code == 200 and "no-store" in confirmed["Cache-Control"]
    codes = re.findall(r"<li><code>([a-z0-9]+)</code></li>", confirmed.content.decode())
    assert len(codes) == 8
    assert sorted(StaticToken.objects.filter(device__user=user).values_list("token", flat=True)) == sorted(
        codes
    )
    device.refresh_from_db()
    assert device.confirmed
    assert client.get("/portal/").status_code == 200
    assert AuditEvent.objects.filter(action="otp.enrolled", actor=user).exists()
    # The codes are not shown again, and enrolment is closed once a device exists.
    assert client.post("/portal/login/enrol/", {"code": current_code(device)}).status_code == 302


def test_enrolment_is_no_way_around_an_existing_authenticator(operator: Any) -> None:
    client = Client()
    password_step(client)
    answer = client.get("/portal/login/enrol/")
    assert answer.status_code == 302 and answer["Location"] == "/portal/login/verify/"
    assert TOTPDevice.objects.filter(user=operator).count() == 1


def test_the_second_step_needs_the_first(operator: Any) -> None:
    device = TOTPDevice.objects.get(user=operator)
    client = Client()
    answer = code_step(client, current_code(device))
    assert answer.status_code == 302 and answer["Location"] == "/portal/login/"
    assert client.get("/portal/login/enrol/").status_code == 302


def test_the_pending_step_expires(operator: Any) -> None:
    import datetime as dt

    import time_machine

    device = TOTPDevice.objects.get(user=operator)
    client = Client()
    password_step(client)
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6), tick=False):
        answer = code_step(client, current_code(device))
    assert answer.status_code == 302 and answer["Location"] == "/portal/login/"


def test_open_redirects_are_refused(operator: Any) -> None:
    client = Client()
    client.post(
        "/portal/login/", {"username": "operator-1", "password": PASSWORD, "next": "https://evil.example/"}
    )
    device = TOTPDevice.objects.get(user=operator)
    assert code_step(client, current_code(device))["Location"] == "/portal/"


def test_sign_out(operator: Any) -> None:
    client = Client()
    password_step(client)
    code_step(client, current_code(TOTPDevice.objects.get(user=operator)))
    assert client.post("/portal/logout/").status_code == 302
    assert client.get("/portal/").status_code == 302
    assert AuditEvent.objects.filter(action="logout", actor=operator).exists()
