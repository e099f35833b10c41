"""The admin: device list, filters, search, certificate history, actions that show secrets once,
read-only certificates and history, validated ACL rules, model-change history."""

from __future__ import annotations

from typing import Any

import pytest
from auditlog.models import LogEntry
from django.test import Client

from devices.lifecycle import get_device, reissue_device, revoke_device
from devices.models import Device, DeviceStatus
from devices.registration import RegistrationRequest, register_device
from pki.models import Certificate
from pki.profiles import KeyType
from tests.support.portal import signed_in


@pytest.fixture
def operator(ca: Any, make_user: Any, verified_login: Any) -> Client:
    return signed_in(make_user, verified_login, "Operators", "admin-operator", is_staff=True)


@pytest.fixture
def superuser(ca: Any, make_user: Any, verified_login: Any) -> Client:
    return signed_in(make_user, verified_login, None, "root", is_staff=True, is_superuser=True)


def register(name: str, hardware_id: str | None = None, key_type: KeyType = KeyType.EC_P256) -> Device:
    return register_device(RegistrationRequest(name=name, hardware_id=hardware_id, key_type=key_type)).device


def test_list_search_and_filters(operator: Client) -> None:
    first = register("alpha", "HW-A")
    register("beta", "HW-B", KeyType.RSA2048)
    revoke_device(register("gamma", "HW-C"))
    serial = Certificate.objects.get(device=first).serial

    def listed(query: str) -> set[str]:
        html = operator.get(f"/admin/devices/device/?{query}").content.decode()
        return {name for name in ("alpha", "beta", "gamma") if f">{name}<" in html}

    page = operator.get("/admin/devices/device/").content.decode()
    assert "certificate ends" in page.lower() and "Updated at" in page
    assert listed("") == {"alpha", "beta", "gamma"}
    assert listed("q=HW-B") == {"beta"}
    assert listed(f"q={serial}") == {"alpha"}
    assert listed(f"q={':'.join(serial[i : i + 2] for i in range(0, len(serial), 2))}") == {"alpha"}
    assert listed(f"q={first.id}") == {"alpha"}
    assert listed("status__exact=revoked") == {"gamma"}
    assert listed("key_type=rsa2048") == {"beta"}
    assert listed("expiring=30") == set()


def test_device_page_has_the_certificate_history_read_only(operator: Client) -> None:
    device = register("history")
    reissue_device(get_device(device.id))
    html = operator.get(f"/admin/devices/device/{device.id}/change/").content.decode()
    for certificate in Certificate.objects.filter(device=device):
        assert certificate.serial in html
    assert 'name="certificates-0-serial"' not in html  # shown, not editable


@pytest.mark.parametrize("action", ["reissue_selected", "new_link_selected"])
def test_actions_hand_over_new_credentials_once(operator: Client, action: str) -> None:
    device = register("rotated")
    answer = operator.post("/admin/devices/device/", {"action": action, "_selected_action": [str(device.id)]})
    assert answer.status_code == 303 and answer["Location"].startswith("/portal/credentials/")
    shown = operator.get(answer["Location"])
    assert shown.status_code == 200 and 'data-testid="bundle-password"' in shown.content.decode()
    assert operator.get(answer["Location"]).status_code == 410


def test_actions_report_what_they_cannot_do(operator: Client) -> None:
    revoked = register("gone")
    revoke_device(revoked)
    answer = operator.post(
        "/admin/devices/device/",
        {"action": "reissue_selected", "_selected_action": [str(revoked.id)]},
        follow=True,
    )
    assert "only active devices" in answer.content.decode()


def test_certificates_cannot_be_added_changed_or_deleted(superuser: Client) -> None:
    device = register("kept")
    certificate = Certificate.objects.get(device=device)
    assert superuser.get("/admin/pki/certificate/add/").status_code == 403
    assert (
        superuser.post(f"/admin/pki/certificate/{certificate.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    superuser.post(f"/admin/pki/certificate/{certificate.pk}/change/", {"status": "revoked"})
    certificate.refresh_from_db()
    assert certificate.status == "active"
    assert superuser.post(f"/admin/devices/device/{device.id}/delete/", {"post": "yes"}).status_code == 403


def test_acl_rules_are_validated(superuser: Client) -> None:
    device = register("ruled")
    other = register("other")
    form = {"device": str(device.id), "access": "read", "shared": ""}
    refused = superuser.post("/admin/broker/aclrule/add/", {**form, "topic_filter": f"devices/{other.id}/#"})
    assert refused.status_code == 200 and "other devices" in refused.content.decode()
    bad = superuser.post("/admin/broker/aclrule/add/", {**form, "topic_filter": "a/#/b"})
    assert bad.status_code == 200
    saved = superuser.post("/admin/broker/aclrule/add/", {**form, "topic_filter": "fleet/commands"})
    assert saved.status_code == 302


def test_model_changes_are_in_the_history_with_actor_and_address(operator: Client) -> None:
    device = register("logged")
    revoke_device(get_device(device.id))
    entries = LogEntry.objects.get_for_object(device)
    assert entries.filter(action=LogEntry.Action.CREATE).exists()
    assert any("status" in entry.changes_dict for entry in entries.filter(action=LogEntry.Action.UPDATE))
    # Through a request, the actor and the address are recorded.
    other = register("via-portal")
    operator.post(
        "/admin/devices/device/",
        {
            "action": "revoke_selected",
            "_selected_action": [str(other.id)],
            "confirm": "yes",
            "reason": "superseded",
        },
        REMOTE_ADDR="198.51.100.3",
        HTTP_X_FORWARDED_FOR="6.6.6.6",
    )
    assert Device.objects.get(pk=other.pk).status == DeviceStatus.REVOKED
    update = LogEntry.objects.get_for_object(other).filter(action=LogEntry.Action.UPDATE).first()
    assert update is not None
    assert update.actor is not None and update.actor.username == "admin-operator"
    assert update.remote_addr == "198.51.100.3"  # not the client's own X-Forwarded-For claim


def test_user_history_never_holds_password_hashes(superuser: Client, make_user: Any) -> None:
    user = make_user("changed")
    user.set_password("another-long-password")
    user.save()
    for entry in LogEntry.objects.get_for_object(user):
        assert "password" not in entry.changes_dict
