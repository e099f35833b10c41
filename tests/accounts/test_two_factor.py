"""Every staff login needs a TOTP second factor (django-otp)."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

PASSWORD = "a-long-test-password"


def current_code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


@pytest.fixture
def staff(make_user: Any) -> Any:
    user = make_user("operator-1", "Operators")
    user.is_staff = True
    user.save()
    call_command("enroll_totp", "operator-1", stdout=StringIO())
    return user


def admin_login(client: Client, token: str, device: TOTPDevice | None = None) -> Any:
    data = {"username": "operator-1", "password": PASSWORD, "otp_token": token}
    if device is not None:
        data["otp_device"] = device.persistent_id
    return client.post("/admin/login/?next=/admin/", data)


def test_password_alone_does_not_open_the_admin(staff: Any) -> None:
    client = Client()
    response = admin_login(client, "")
    assert response.status_code == 200  # the form again, with an error
    assert client.get("/admin/").status_code == 302  # still sent to the login page


def test_password_and_totp_open_the_admin(staff: Any) -> None:
    device = TOTPDevice.objects.get(user=staff)
    client = Client()
    response = admin_login(client, current_code(device), device)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_used_code_cannot_be_replayed(staff: Any) -> None:
    device = TOTPDevice.objects.get(user=staff)
    code = current_code(device)
    assert admin_login(Client(), code, device).status_code == 302
    replay = Client()
    assert admin_login(replay, code, device).status_code == 200
    assert replay.get("/admin/").status_code == 302


def test_a_wrong_code_is_refused(staff: Any) -> None:
    device = TOTPDevice.objects.get(user=staff)
    wrong = f"{(int(current_code(device)) + 1) % 10**6:06d}"
    client = Client()
    assert admin_login(client, wrong, device).status_code == 200
    assert client.get("/admin/").status_code == 302


def test_a_backup_code_works_once(staff: Any) -> None:
    backup = StaticToken.objects.filter(device__user=staff).first()
    assert backup is not None
    client = Client()
    response = admin_login(client, backup.token, backup.device)
    assert response.status_code == 302
    assert not StaticToken.objects.filter(pk=backup.pk).exists()


def test_enroll_totp_prints_a_qr_code_and_backup_codes(make_user: Any) -> None:
    make_user("newcomer")
    out = StringIO()
    call_command("enroll_totp", "newcomer", stdout=out)
    text = out.getvalue()
    device = TOTPDevice.objects.get(user__username="newcomer")
    assert device.config_url in text
    assert re.search(r"otpauth://totp/.*secret=[A-Z2-7]+", text)
    assert "█" in text or "▀" in text  # the QR code itself
    assert StaticToken.objects.filter(device__user__username="newcomer").count() == 8
    with pytest.raises(CommandError, match="already has an authenticator"):
        call_command("enroll_totp", "newcomer", stdout=StringIO())
    call_command("enroll_totp", "newcomer", "--replace", stdout=StringIO())
    assert TOTPDevice.objects.filter(user__username="newcomer").count() == 1


def test_repeated_failures_lock_out_that_user_from_that_address(staff: Any, make_user: Any) -> None:
    from django.conf import settings

    device = TOTPDevice.objects.get(user=staff)
    attacker = Client(REMOTE_ADDR="192.0.2.66")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attacker.post("/admin/login/", {"username": "operator-1", "password": "guess", "otp_token": ""})
    locked = admin_login(attacker, current_code(device), device)
    assert locked.status_code in {403, 429}
    assert attacker.get("/admin/").status_code == 302
    # The real operator, elsewhere, is not locked out by the attacker.
    colleague = Client(REMOTE_ADDR="198.51.100.20")
    device.refresh_from_db()
    device.last_t = -1
    device.save()
    assert admin_login(colleague, current_code(device), device).status_code == 302


def test_a_wrong_code_on_the_admin_form_is_audited_with_the_address(staff: Any) -> None:
    from audit.models import AuditEvent

    device = TOTPDevice.objects.get(user=staff)
    wrong = f"{(int(current_code(device)) + 1) % 10**6:06d}"
    client = Client(REMOTE_ADDR="198.51.100.7")
    assert admin_login(client, wrong, device).status_code == 200
    failures = AuditEvent.objects.filter(action="login.otp_failed")
    assert failures.count() == 1  # once, not also by django-otp's signal
    failure = failures.get()
    assert failure.actor == staff
    assert failure.address == "198.51.100.7"
    assert failure.detail.get("form") == "admin"


def test_wrong_codes_on_the_admin_form_lock_out_that_user_from_that_address(staff: Any) -> None:
    # As wrong passwords do (django-axes), and as on the portal's sign-in.
    from django.conf import settings

    device = TOTPDevice.objects.get(user=staff)
    attacker = Client(REMOTE_ADDR="192.0.2.67")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        wrong = f"{(int(current_code(device)) + 1) % 10**6:06d}"
        admin_login(attacker, wrong, device)
        device.refresh_from_db()
        device.throttling_failure_count = 0  # django-otp's own per-device delay, not under test
        device.throttling_failure_timestamp = None
        device.save()
    assert admin_login(attacker, current_code(device), device).status_code in {403, 429}
    assert attacker.get("/admin/").status_code == 302
