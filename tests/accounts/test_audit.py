"""Every issue, revoke, download and sign-in is in an append-only trail with actor, time and address."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent


def test_workflows_are_recorded_with_actor_and_address(operator_api: APIClient) -> None:
    address: dict[str, Any] = {"REMOTE_ADDR": "198.51.100.7"}
    answer = operator_api.post(
        "/register", {"name": "a", "key_type": "ec-p256"}, format="json", **address
    ).json()
    operator_api.post(f"/api/v1/devices/{answer['id']}/reissue", {}, format="json", **address)
    operator_api.post(f"/revoke/{answer['id']}", {"reason": "keyCompromise"}, format="json", **address)
    other = operator_api.post(
        "/register", {"name": "b", "key_type": "ec-p256"}, format="json", **address
    ).json()
    APIClient().get(urlsplit(other["download_url"]).path, REMOTE_ADDR="203.0.113.9")
    operator_api.delete(f"/api/v1/devices/{other['id']}", **address)

    # (The fixture's API token creation is audited too: token.created, tested in test_api_token_hardening.)
    events = list(AuditEvent.objects.exclude(action__startswith="token.").order_by("at", "pk"))
    assert [event.action for event in events] == [
        "device.registered",
        "device.reissued",
        "device.revoked",
        "device.registered",
        "bundle.downloaded",
        "device.deleted",
    ]
    staff_events = [event for event in events if event.action != "bundle.downloaded"]
    assert all(
        event.actor_name == "operators-user" and event.address == "198.51.100.7" for event in staff_events
    )
    download = next(event for event in events if event.action == "bundle.downloaded")
    assert download.address == "203.0.113.9" and str(download.device_id) == other["id"]
    assert events[2].detail == {"reason": "keyCompromise"}


def test_sign_ins_are_recorded_without_passwords(make_user: Any) -> None:
    make_user("someone")
    Client().post(
        "/admin/login/", {"username": "someone", "password": "wrong-password-here", "otp_token": ""}
    )
    failed = AuditEvent.objects.get(action="login.failed")
    assert failed.detail == {"username": "someone"}
    assert "wrong-password-here" not in str(failed.detail)


def test_the_trail_is_append_only(operator_api: APIClient, verified_login: Any, make_user: Any) -> None:
    operator_api.post("/register", {"name": "a", "key_type": "ec-p256"}, format="json")
    event = AuditEvent.objects.get(action="device.registered")
    event.action = "device.revoked"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.update(action="x")
    # Even a superuser's admin is read-only.
    admin_user = make_user("root-user")
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    browser = verified_login(Client(), admin_user)
    assert browser.get("/admin/audit/auditevent/").status_code == 200
    assert browser.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_forwarded_addresses_are_trusted_only_from_configured_proxies(settings: Any) -> None:
    from django.test import RequestFactory

    from kernel.addresses import client_address

    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.4")
    assert client_address(request) == "10.0.0.5"  # no trusted proxy: the header is ignored
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert client_address(request) == "203.0.113.4"  # the address our one proxy saw, not the client's claim
