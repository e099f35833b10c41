"""The enrolment group API: operators and integrators add, change and delete groups, auditors
read them; a PEM that is not a CA certificate is refused with a code."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from audit.models import AuditAction, AuditEvent
from enrollment.models import EnrollmentGroup
from pki.keystore import CertificateAuthority
from tests.support.helpers import pem
from tests.support.manufacturer import make_ca, make_factory_certificate

URL = "/api/v1/enrollment-groups/"


def create(client: APIClient, name: str = "Acme sensors", **fields: Any) -> Any:
    body = {"name": name, "ca_certificate": fields.pop("ca_certificate", make_ca().pem), **fields}
    return client.post(URL, body, format="json")


def test_an_operator_adds_lists_changes_and_deletes_a_group(operator_api: APIClient) -> None:
    manufacturer = make_ca()
    created = create(operator_api, ca_certificate=manufacturer.pem, allowed_hardware_ids=["SN-1"])
    assert created.status_code == 201, created.content
    group = created.json()
    assert group["name"] == "Acme sensors" and group["enabled"] is True
    assert group["ca_subject"] == manufacturer.certificate.subject.rfc4514_string()
    assert group["allowed_hardware_ids"] == ["SN-1"]
    assert group["created_by"] == "operators-user"
    assert AuditEvent.objects.get(action=AuditAction.ENROLLMENT_GROUP_CREATED).actor_name == "operators-user"

    listed = operator_api.get(URL).json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == group["id"]
    for slash in ("", "/"):
        assert operator_api.get(f"{URL}{group['id']}{slash}").json()["id"] == group["id"]

    changed = operator_api.patch(
        f"{URL}{group['id']}", {"enabled": False, "allowed_hardware_ids": []}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert (changed.json()["enabled"], changed.json()["allowed_hardware_ids"]) == (False, [])
    assert EnrollmentGroup.objects.get().enabled is False

    assert operator_api.delete(f"{URL}{group['id']}").status_code == 204
    assert not EnrollmentGroup.objects.exists()
    assert AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_GROUP_DELETED).count() == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a readable"),
        ("hello", "exactly one"),
        (None, "not a CA certificate"),  # a device certificate
    ],
)
def test_a_pem_that_is_not_a_ca_certificate_is_400_with_a_code(
    operator_api: APIClient, text: str | None, problem: str
) -> None:
    if text is None:
        text = pem(make_factory_certificate(make_ca())).decode()
    refused = create(operator_api, ca_certificate=text)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "invalid_ca_certificate" and problem in error["message"]
    assert not EnrollmentGroup.objects.exists()


def test_bad_fields_are_400_and_duplicates_409(operator_api: APIClient) -> None:
    manufacturer = make_ca()
    assert create(operator_api, ca_certificate=manufacturer.pem).status_code == 201
    for body in (
        {"name": "x", "ca_certificate": 42},
        {"name": "two\nlines", "ca_certificate": make_ca().pem},
        {"name": "x", "ca_certificate": make_ca().pem, "enabled": "yes"},
        {"name": "x", "ca_certificate": make_ca().pem, "allowed_hardware_ids": "SN-1"},
        {"name": "x", "ca_certificate": make_ca().pem, "allowed_hardware_ids": ["bad\tid"]},
        {"ca_certificate": make_ca().pem},
    ):
        refused = operator_api.post(URL, body, format="json")
        assert refused.status_code == 400, (body, refused.content)
        assert refused.json()["error"]["fields"]
    same_name = create(operator_api)
    assert (same_name.status_code, same_name.json()["error"]["code"]) == (409, "enrollment_group_exists")
    same_ca = create(operator_api, name="another", ca_certificate=manufacturer.pem)
    assert (same_ca.status_code, same_ca.json()["error"]["code"]) == (409, "enrollment_group_exists")


def test_unknown_ids_are_404(operator_api: APIClient) -> None:
    for path in (f"{URL}not-a-uuid", f"{URL}00000000-0000-0000-0000-000000000000"):
        answer = operator_api.get(path)
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "enrollment_group_not_found")


@pytest.mark.parametrize(
    ("role", "may_change"), [("Operators", True), ("Integrators", True), ("Auditors", False), (None, False)]
)
def test_roles(ca: CertificateAuthority, token_client: Any, role: str | None, may_change: bool) -> None:
    operator = token_client("Operators", "group-maker")
    group_id = create(operator).json()["id"]
    client = token_client(role)
    assert client.get(URL).status_code == (200 if role else 403)
    assert client.get(f"{URL}{group_id}").status_code == (200 if role else 403)
    expected = 201 if may_change else 403
    assert create(client, name=f"by {role}").status_code == expected
    expected = 200 if may_change else 403
    assert client.patch(f"{URL}{group_id}", {"enabled": False}, format="json").status_code == expected
    expected = 204 if may_change else 403
    assert client.delete(f"{URL}{group_id}").status_code == expected
    assert APIClient().get(URL).status_code == 401


def test_the_schema_documents_the_ca_certificate_with_a_working_example(
    operator_api: APIClient,
) -> None:
    import re

    from enrollment.factory import MAX_CA_PEM_LENGTH

    document = APIClient().get("/api/schema/?format=json").json()
    body = document["paths"]["/api/v1/enrollment-groups/"]["post"]["requestBody"]["content"]
    reference = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    field = document["components"]["schemas"][reference]["properties"]["ca_certificate"]
    assert (field["format"], field["maxLength"]) == ("pem-ca-certificate", MAX_CA_PEM_LENGTH)
    assert re.search(field["pattern"], field["example"])
    assert create(operator_api, ca_certificate=field["example"]).status_code == 201
