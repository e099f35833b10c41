"""Every portal page and the key admin views, for every role: who gets what.

Roles: anonymous; a password-only session (signed in without the second factor); Operators,
Auditors, Integrators (all with the second factor); a superuser.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from devices.models import Device, DeviceStatus
from devices.registration import RegistrationRequest, register_device
from pki.profiles import KeyType

ROLES = ["anonymous", "password-only", "Operators", "Auditors", "Integrators", "superuser"]
LOGIN = "login"  # redirected to a sign-in page
OK, FORBIDDEN = 200, 403

VIEW_ONLY = {
    "anonymous": LOGIN, "password-only": LOGIN, "Operators": OK, "Auditors": OK,
    "Integrators": FORBIDDEN, "superuser": OK,
}  # fmt: skip
ACTION = {**VIEW_ONLY, "Auditors": FORBIDDEN}

PORTAL: list[tuple[str, dict[str, Any]]] = [
    ("/portal/", VIEW_ONLY),
    ("/portal/devices/", VIEW_ONLY),
    ("/portal/devices/?q=target&status=active", VIEW_ONLY),
    ("/portal/devices/{id}/", VIEW_ONLY),
    ("/portal/devices/register/", ACTION),
    ("/portal/devices/{id}/revoke/", ACTION),
    ("/portal/devices/{id}/reissue/", ACTION),
    ("/portal/devices/{id}/link/", ACTION),
    # The target is active: those allowed are sent back to its page (only failed devices retry).
    ("/portal/devices/{id}/retry/", {**ACTION, "Operators": 302, "superuser": 302}),
    ("/portal/bulk/", ACTION),
]

# Admin: staff roles are Operators and Auditors; integrators are API-only accounts, not staff.
ADMIN_VIEW = {
    "anonymous": LOGIN, "password-only": LOGIN, "Operators": OK, "Auditors": OK,
    "Integrators": LOGIN, "superuser": OK,
}  # fmt: skip
ADMIN: list[tuple[str, dict[str, Any]]] = [
    ("/admin/", ADMIN_VIEW),
    ("/admin/devices/device/", ADMIN_VIEW),
    ("/admin/devices/device/?status__exact=active&expiring=30&key_type=ec-p256", ADMIN_VIEW),
    ("/admin/devices/device/{id}/change/", ADMIN_VIEW),
    ("/admin/devices/downloadlink/", ADMIN_VIEW),
    ("/admin/pki/certificate/", ADMIN_VIEW),
    ("/admin/broker/aclrule/", ADMIN_VIEW),
    ("/admin/broker/brokersync/", ADMIN_VIEW),
    ("/admin/broker/pendingchange/", ADMIN_VIEW),
    (
        "/admin/broker/pendingchange/add/",
        {**ADMIN_VIEW, "Operators": FORBIDDEN, "Auditors": FORBIDDEN, "superuser": FORBIDDEN},
    ),
    ("/admin/audit/auditevent/", ADMIN_VIEW),
    ("/admin/auditlog/logentry/", ADMIN_VIEW),
    (
        "/admin/pki/certificate/add/",
        {**ADMIN_VIEW, "Operators": FORBIDDEN, "Auditors": FORBIDDEN, "superuser": FORBIDDEN},
    ),
    ("/admin/broker/aclrule/add/", {**ADMIN_VIEW, "Operators": FORBIDDEN, "Auditors": FORBIDDEN}),
    ("/admin/auth/user/", {**ADMIN_VIEW, "Operators": FORBIDDEN, "Auditors": FORBIDDEN}),
]


def client_for(role: str, make_user: Any, verified_login: Any) -> Client:
    if role == "anonymous":
        return Client()
    if role == "password-only":
        user = make_user("half-signed-in")
        user.is_staff = user.is_superuser = True
        user.save()
        client = Client()
        client.force_login(user)  # a session without the second factor
        return client
    user = make_user(f"{role.lower()}-member", None if role == "superuser" else role)
    user.is_staff = role != "Integrators"
    user.is_superuser = role == "superuser"
    user.save()
    return verified_login(Client(), user)  # type: ignore[no-any-return]


def outcome(response: Any) -> int | str:
    if response.status_code == 302 and "login" in response["Location"]:
        return LOGIN
    return int(response.status_code)


@pytest.fixture
def target(ca: Any) -> Device:
    return register_device(RegistrationRequest(name="target", key_type=KeyType.EC_P256)).device


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("template", "expected"), PORTAL + ADMIN, ids=[path for path, _ in PORTAL + ADMIN])
def test_get(
    role: str, template: str, expected: dict[str, Any], target: Device, make_user: Any, verified_login: Any
) -> None:
    client = client_for(role, make_user, verified_login)
    assert outcome(client.get(template.format(id=target.id))) == expected[role]


POSTS: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    (
        "/portal/devices/{id}/revoke/",
        {"reason": "unspecified", "confirm": "on"},
        {**ACTION, "Operators": 302, "superuser": 302},
    ),
    ("/portal/devices/{id}/link/", {"submission": "x"}, {**ACTION, "Operators": 302, "superuser": 302}),
    # Without the form's one-time token nothing is registered, whoever sends it.
    (
        "/portal/devices/register/",
        {"name": "n", "key_type": "ec-p256"},
        {**ACTION, "Operators": 302, "superuser": 302},
    ),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("template", "body", "expected"), POSTS, ids=[path for path, _, _ in POSTS])
def test_post(
    role: str,
    template: str,
    body: dict[str, str],
    expected: dict[str, Any],
    target: Device,
    make_user: Any,
    verified_login: Any,
) -> None:
    client = client_for(role, make_user, verified_login)
    response = client.post(template.format(id=target.id), body)
    assert outcome(response) == expected[role]
    target.refresh_from_db()
    assert Device.objects.count() == 1
    if expected[role] in {LOGIN, FORBIDDEN}:
        assert target.status == DeviceStatus.ACTIVE


@pytest.mark.parametrize("role", ["Operators", "Auditors", "superuser"])
def test_admin_revoke_action_follows_the_role(
    role: str, target: Device, make_user: Any, verified_login: Any
) -> None:
    client = client_for(role, make_user, verified_login)
    changelist = "/admin/devices/device/"
    selection = {"action": "revoke_selected", "_selected_action": [str(target.id)]}
    confirm = client.post(changelist, selection)
    if role == "Auditors":
        # The action is not offered to auditors: Django answers with the list again, nothing done.
        assert "revoke_selected" not in client.get(changelist).content.decode()
        target.refresh_from_db()
        assert target.status == DeviceStatus.ACTIVE
        return
    assert confirm.status_code == 200 and "Reason (RFC 5280)" in confirm.content.decode()
    done = client.post(changelist, {**selection, "confirm": "yes", "reason": "keyCompromise"})
    assert done.status_code == 302
    target.refresh_from_db()
    assert target.status == DeviceStatus.REVOKED


@pytest.mark.parametrize("role", ["Operators", "Auditors", "superuser"])
def test_history_is_read_only_for_everyone(
    role: str, target: Device, make_user: Any, verified_login: Any
) -> None:
    from auditlog.models import LogEntry

    from audit.models import AuditEvent

    client = client_for(role, make_user, verified_login)
    entry = LogEntry.objects.get_for_object(target).first()
    event = AuditEvent.objects.first()
    assert entry is not None and event is not None
    assert client.post(f"/admin/auditlog/logentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get(f"/admin/auditlog/logentry/{entry.pk}/change/").status_code == 200
    assert LogEntry.objects.filter(pk=entry.pk).exists() and AuditEvent.objects.filter(pk=event.pk).exists()


def test_integrators_get_a_403_page_in_the_portal(make_user: Any, verified_login: Any, ca: Any) -> None:
    client = client_for("Integrators", make_user, verified_login)
    page = client.get("/portal/")
    assert page.status_code == 403
    assert "integrators use the API" in page.content.decode()
