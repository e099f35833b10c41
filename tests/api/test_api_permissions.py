"""Every API endpoint, for every role and for anonymous callers: who may do what."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from devices.models import Device
from devices.registration import RegistrationRequest, register_device
from pki.keystore import CertificateAuthority
from pki.profiles import KeyType

ROLES = ["Operators", "Integrators", "Auditors", None, "anonymous"]

# (method, path template, body): {role: expected status}
MATRIX: list[tuple[str, str, dict[str, Any] | None, dict[str | None, int]]] = [
    ("get", "/api/v1/devices/", None, {"Operators": 200, "Integrators": 200, "Auditors": 200, None: 403}),
    ("get", "/device/{id}", None, {"Operators": 200, "Integrators": 200, "Auditors": 200, None: 403}),
    ("get", "/api/v1/devices/{id}", None, {"Operators": 200, "Integrators": 200, "Auditors": 200, None: 403}),
    (
        "post",
        "/register",
        {"name": "m", "key_type": "ec-p256"},
        {"Operators": 201, "Integrators": 201, "Auditors": 403, None: 403},
    ),
    (
        "post",
        "/api/v1/devices/",
        {"name": "m", "key_type": "ec-p256"},
        {"Operators": 201, "Integrators": 201, "Auditors": 403, None: 403},
    ),
    ("post", "/revoke/{id}", {}, {"Operators": 200, "Integrators": 200, "Auditors": 403, None: 403}),
    (
        "post",
        "/api/v1/devices/{id}/revoke",
        {},
        {"Operators": 200, "Integrators": 200, "Auditors": 403, None: 403},
    ),
    (
        "post",
        "/api/v1/devices/{id}/reissue",
        {},
        {"Operators": 201, "Integrators": 201, "Auditors": 403, None: 403},
    ),
    (
        "delete",
        "/api/v1/devices/{id}",
        None,
        {"Operators": 204, "Integrators": 204, "Auditors": 403, None: 403},
    ),
]


def client_for(role: str | None, token_client: Any) -> APIClient:
    client: APIClient = APIClient() if role == "anonymous" else token_client(role)
    return client


@pytest.mark.parametrize("role", ROLES, ids=lambda role: str(role))
@pytest.mark.parametrize(
    ("method", "template", "body", "expected"), MATRIX, ids=[f"{m} {t}" for m, t, _, _ in MATRIX]
)
def test_permission_matrix(
    ca: CertificateAuthority,
    token_client: Any,
    role: str | None,
    method: str,
    template: str,
    body: dict[str, Any] | None,
    expected: dict[str | None, int],
) -> None:
    device = register_device(RegistrationRequest(name="target", key_type=KeyType.EC_P256)).device
    client = client_for(role, token_client)
    path = template.format(id=device.id)
    response = (
        getattr(client, method)(path, body, format="json")
        if body is not None
        else getattr(client, method)(path)
    )
    want = 401 if role == "anonymous" else expected[role]
    assert response.status_code == want, response.content
    if want >= 400:
        assert response.json()["error"]["code"] in {"not_authenticated", "permission_denied"}
        assert Device.objects.get(pk=device.pk).status == "active"


@pytest.mark.parametrize("path", ["/health", "/api/v1/health", "/crl.pem", "/ca.crt", "/api/schema/"])
def test_public_endpoints_need_no_login(ca: CertificateAuthority, path: str) -> None:
    # /health answers 200 or 503 depending on the components; never 401 or 403.
    assert APIClient().get(path).status_code in ({200, 503} if "health" in path else {200})


def test_roles_exist_with_their_permissions(db: Any) -> None:
    from django.contrib.auth.models import Group

    def codenames(role: str) -> set[str]:
        return set(Group.objects.get(name=role).permissions.values_list("codename", flat=True))

    assert {"register_device", "revoke_device", "reissue_device", "view_device"} <= codenames("Operators")
    assert {"register_device", "revoke_device", "reissue_device", "view_device"} <= codenames("Integrators")
    assert "view_device" in codenames("Auditors")
    assert not {"register_device", "revoke_device", "reissue_device"} & codenames("Auditors")
