"""The admin's pages and actions hold each role to the same rules as the portal and the API
(issue #16, item 13: an Integrator with is_staff got the admin's revoke, re-issue and new-link
actions and could revoke devices).

For every role, each with is_staff, and a superuser, the matrix asks the admin, the portal and
the API the same questions, and checks the admin against a written table and against the other
two: the admin allows exactly what the portal allows (both are browser interfaces, where
integrators are refused), and never more than the API allows.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from accounts.services import create_api_token
from devices.models import Device, DeviceStatus, DownloadLink
from devices.registration import RegistrationRequest, register_device
from pki.models import Certificate
from pki.profiles import KeyType
from tests.support.portal import signed_in

USERS = {
    "superuser": (None, {"is_superuser": True}),
    "operator": ("Operators", {}),
    "auditor": ("Auditors", {}),
    "integrator": ("Integrators", {}),
}
ACTIONS = ["revoke", "reissue", "new_link", "delete", "bulk_delete"]
# What the admin must allow: the portal's rule (integrators are API-only; auditors only read;
# nobody deletes devices by hand in a browser: a device is revoked, and its history kept).
EXPECTED = {
    "superuser": {"pages": True, "revoke": True, "reissue": True, "new_link": True},
    "operator": {"pages": True, "revoke": True, "reissue": True, "new_link": True},
    "auditor": {"pages": True, "revoke": False, "reissue": False, "new_link": False},
    "integrator": {"pages": False, "revoke": False, "reissue": False, "new_link": False},
}
for row in EXPECTED.values():
    row.update(delete=False, bulk_delete=False)


def register(name: str) -> Device:
    return register_device(RegistrationRequest(name=name, key_type=KeyType.EC_P256)).device


def admin_pages_open(client: Client, device: Device) -> bool:
    pages = [
        "/admin/",
        "/admin/devices/device/",
        f"/admin/devices/device/{device.id}/change/",
        "/admin/devices/downloadlink/",
        "/admin/pki/certificate/",
    ]
    codes = {client.get(page).status_code for page in pages}
    assert codes in ({200}, {302}), codes  # all open, or all sent to the admin's sign-in
    return codes == {200}


def admin_action(client: Client, action: str, device: Device) -> bool:
    """Run the action from the device list as a browser would; True if it took effect."""
    before_links = DownloadLink.objects.filter(device=device).count()
    before_certificates = Certificate.objects.filter(device=device).count()
    if action == "delete":
        client.post(f"/admin/devices/device/{device.id}/delete/", {"post": "yes"})
        return not Device.objects.filter(pk=device.pk).exists()
    name = {
        "revoke": "revoke_selected",
        "reissue": "reissue_selected",
        "new_link": "new_link_selected",
        "bulk_delete": "delete_selected",
    }[action]
    form = {"action": name, "_selected_action": [str(device.id)], "post": "yes"}
    if action == "revoke":
        form.update(confirm="yes", reason="superseded")
    listed = client.get("/admin/devices/device/").content.decode()
    offered = f'value="{name}"' in listed
    client.post("/admin/devices/device/", form)
    done = {
        "revoke": lambda: Device.objects.get(pk=device.pk).status == DeviceStatus.REVOKED,
        "reissue": lambda: Certificate.objects.filter(device=device).count() > before_certificates,
        "new_link": lambda: DownloadLink.objects.filter(device=device).count() > before_links,
        "bulk_delete": lambda: not Device.objects.filter(pk=device.pk).exists(),
    }[action]()
    assert offered == done, f"{action}: offered={offered} but took effect={done}"
    return done


def portal_allows(client: Client, action: str, device: Device) -> bool:
    path = {
        "pages": "/portal/devices/",
        "revoke": f"/portal/devices/{device.id}/revoke/",
        "reissue": f"/portal/devices/{device.id}/reissue/",
        "new_link": f"/portal/devices/{device.id}/link/",
    }.get(action)
    if path is None:
        return False  # the portal has no way to delete a device
    code = client.get(path).status_code
    assert code in {200, 403}, (action, code)
    return code == 200


def api_allows(client: APIClient, action: str, device: Device) -> bool:
    method, path = {
        "pages": ("get", f"/api/v1/devices/{device.id}"),
        "revoke": ("post", f"/api/v1/devices/{device.id}/revoke"),
        "reissue": ("post", f"/api/v1/devices/{device.id}/reissue/"),
        "new_link": ("post", f"/api/v1/devices/{device.id}/bundle/"),
        "delete": ("delete", f"/api/v1/devices/{device.id}"),
        "bulk_delete": ("delete", f"/api/v1/devices/{device.id}"),
    }[action]
    code = getattr(client, method)(path, {}, format="json").status_code
    assert code != 404, (action, path)
    return bool(code < 400)


@pytest.mark.parametrize("who", list(USERS))
def test_admin_holds_roles_as_the_portal_and_the_api(
    ca: Any, make_user: Any, verified_login: Any, broker_files: Any, who: str
) -> None:
    role, flags = USERS[who]
    browser = signed_in(make_user, verified_login, role, f"{who}-staff", is_staff=True, **flags)
    # The same user through the API, with a token.
    api = APIClient()
    api.credentials(
        HTTP_AUTHORIZATION=f"Token {create_api_token(User.objects.get(username=f'{who}-staff')).value}"
    )

    admin = {"pages": admin_pages_open(browser, register(f"{who}-pages"))}
    portal = {"pages": portal_allows(browser, "pages", register(f"{who}-portal-pages"))}
    through_api = {"pages": api_allows(api, "pages", register(f"{who}-api-pages"))}
    for action in ACTIONS:
        admin[action] = admin_action(browser, action, register(f"{who}-admin-{action}"))
        portal[action] = portal_allows(browser, action, register(f"{who}-portal-{action}"))
        through_api[action] = api_allows(api, action, register(f"{who}-api-{action}"))

    assert admin == EXPECTED[who]
    assert admin == portal  # the browser interfaces agree
    assert all(
        through_api[action] for action, allowed in admin.items() if allowed
    )  # never looser than the API
