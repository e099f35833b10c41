"""The portal's enrolment group pages: operators add groups and enable or disable them,
auditors only read, integrators stay out; a bad CA certificate is shown on its field."""

from __future__ import annotations

from typing import Any

from django.test import Client

from audit.models import AuditAction, AuditEvent
from enrollment import services
from enrollment.models import EnrollmentCode, EnrollmentGroup
from pki.keystore import CertificateAuthority
from tests.support.manufacturer import make_ca
from tests.support.portal import signed_in

LIST = "/portal/enrollment-groups/"
ADD = "/portal/enrollment-groups/add/"


def test_an_operator_adds_a_group_and_disables_it(operator: Client) -> None:
    assert 'href="/portal/enrollment-groups/"' in operator.get("/portal/").content.decode()
    page = operator.get(ADD)
    assert page.status_code == 200 and 'name="ca_certificate"' in page.content.decode()
    manufacturer = make_ca()
    answer = operator.post(
        ADD,
        {
            "name": "Acme sensors",
            "ca_certificate": manufacturer.pem,
            "allowed_hardware_ids": "SN-1\n\nSN-2\n",
            "enabled": "on",
        },
        follow=True,
    )
    assert answer.redirect_chain[-1][0] == LIST
    html = answer.content.decode()
    assert "Enrolment group Acme sensors added." in html and "Acme Manufacturing CA" in html
    group = EnrollmentGroup.objects.get()
    assert (group.enabled, group.allowed_hardware_ids, group.created_by.username) == (  # type: ignore[union-attr]
        True,
        ["SN-1", "SN-2"],
        "olga",
    )
    assert 'value="false"' in html and ">Disable<" in html

    disabled = operator.post(f"{LIST}{group.id}/enabled/", {"enabled": "false"}, follow=True)
    assert "is disabled" in disabled.content.decode()
    assert EnrollmentGroup.objects.get().enabled is False
    changed = AuditEvent.objects.get(action=AuditAction.ENROLLMENT_GROUP_CHANGED)
    assert (changed.actor_name, changed.detail["enabled"]) == ("olga", "False")
    operator.post(f"{LIST}{group.id}/enabled/", {"enabled": "true"})
    assert EnrollmentGroup.objects.get().enabled is True


def test_a_bad_ca_certificate_is_shown_on_its_field(operator: Client) -> None:
    answer = operator.post(ADD, {"name": "Broken", "ca_certificate": "not a certificate"})
    assert answer.status_code == 200
    assert "Give exactly one PEM certificate" in answer.content.decode()
    assert not EnrollmentGroup.objects.exists()
    answer = operator.post(
        ADD, {"name": "Bad ids", "ca_certificate": make_ca().pem, "allowed_hardware_ids": "ok\nbad\tid"}
    )
    assert "Line 2 contains U+0009" in answer.content.decode()


def test_an_auditor_reads_without_actions(auditor: Client) -> None:
    services.create_enrollment_group(name="Acme sensors", ca_certificate=make_ca().pem)
    group = EnrollmentGroup.objects.get()
    html = auditor.get(LIST).content.decode()
    assert "Acme sensors" in html
    assert ">Disable<" not in html and ADD not in html
    assert auditor.get(ADD).status_code == 403
    assert auditor.post(f"{LIST}{group.id}/enabled/", {"enabled": "false"}).status_code == 403
    assert EnrollmentGroup.objects.get().enabled is True


def test_integrators_and_anonymous_users_stay_out(
    ca: CertificateAuthority, make_user: Any, verified_login: Any
) -> None:
    integrator = signed_in(make_user, verified_login, "Integrators", "ivan")
    assert integrator.get(LIST).status_code == 403
    anonymous = Client().get(LIST)
    assert anonymous.status_code == 302 and "/portal/login/" in anonymous["Location"]


def test_the_admin_shows_groups_and_codes_read_only(
    ca: CertificateAuthority, make_user: Any, verified_login: Any
) -> None:
    from devices.models import Device

    staff = signed_in(make_user, verified_login, "Operators", "staff-olga", is_staff=True)
    group = services.create_enrollment_group(name="Acme sensors", ca_certificate=make_ca().pem)
    device = Device.objects.create(name="awaiting")
    code = services.issue_enrollment_code(device)
    assert "Acme sensors" in staff.get("/admin/enrollment/enrollmentgroup/").content.decode()
    detail = staff.get(f"/admin/enrollment/enrollmentgroup/{group.id}/change/")
    assert detail.status_code == 200 and "Acme Manufacturing CA" in detail.content.decode()
    assert staff.get("/admin/enrollment/enrollmentgroup/add/").status_code == 403
    assert (
        staff.post(f"/admin/enrollment/enrollmentgroup/{group.id}/delete/", {"post": "yes"}).status_code
        == 403
    )
    codes = staff.get("/admin/enrollment/enrollmentcode/")
    assert codes.status_code == 200 and "awaiting" in codes.content.decode()
    stored = EnrollmentCode.objects.get(device=device)
    row = staff.get(f"/admin/enrollment/enrollmentcode/{stored.pk}/change/")
    assert row.status_code == 200
    assert code not in row.content.decode() and stored.digest not in row.content.decode()
