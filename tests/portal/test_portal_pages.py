"""What the portal's pages say (issue #21, item 10), without a browser: a taken hardware id on
its field, the icon at /favicon.ico, the change history naming the API user who revoked, and
ids that break only at their <wbr>. The layout itself is measured in test_browser_layout.py."""

from __future__ import annotations

from typing import Any

import pytest
from auditlog.models import LogEntry
from django.conf import settings as django_settings
from django.db.models.signals import pre_save
from django.template import Context, Template
from django.templatetags.static import static
from django.test import Client

from devices.models import Device
from pki.keystore import CertificateAuthority
from tests.support.portal import register_through_form, signed_in


@pytest.fixture
def operator(ca: CertificateAuthority, make_user: Any, verified_login: Any, broker_files: None) -> Client:
    return signed_in(make_user, verified_login, "Operators", "fleet-administrator")


def test_a_taken_hardware_id_is_an_error_on_its_field(operator: Client) -> None:
    register_through_form(operator, name="first", hardware_id="SN-7F3A9C2E11B04D8F")
    answer = register_through_form(operator, name="second", hardware_id="SN-7F3A9C2E11B04D8F")
    assert answer.status_code == 200
    form = answer.context["form"]
    assert form.non_field_errors() == []
    assert form.errors["hardware_id"][0].startswith("A device with hardware id 'SN-7F3A9C2E11B04D8F'")
    html = answer.content.decode()
    assert 'class="field has-error"' in html and '<div class="alert" role="alert">' not in html
    assert Device.objects.count() == 1


def test_favicon_ico_leads_to_the_icon(client: Client) -> None:
    answer = client.get("/favicon.ico")
    assert answer.status_code == 302
    assert answer["Location"] == static("favicon.svg") == "/static/favicon.svg"
    assert "max-age=86400" in answer["Cache-Control"]
    icon = django_settings.STATICFILES_DIRS[0] / "favicon.svg"
    assert icon.read_text().startswith("<svg")
    assert client.post("/favicon.ico").status_code == 405


def status_changes(device: Device) -> list[LogEntry]:
    return [
        entry
        for entry in LogEntry.objects.get_for_object(device).filter(action=LogEntry.Action.UPDATE)
        if "status" in entry.changes_dict
    ]


def test_a_revoke_through_the_api_names_the_token_user_in_the_history(
    operator: Client, token_client: Any
) -> None:
    integrator = token_client("Operators", "integration-pipeline")
    register_through_form(operator, name="api-revoked", hardware_id="HW-A")
    register_through_form(operator, name="portal-revoked", hardware_id="HW-P")
    by_api = Device.objects.get(name="api-revoked")
    by_portal = Device.objects.get(name="portal-revoked")
    receivers = len(pre_save._live_receivers(LogEntry)[0])

    answer = integrator.post(f"/revoke/{by_api.id}", {"reason": "keyCompromise"}, format="json")
    assert answer.status_code == 200, answer.content
    operator.post(f"/portal/devices/{by_portal.id}/revoke/", {"reason": "superseded", "confirm": "on"})

    [api_entry] = status_changes(by_api)
    assert api_entry.actor is not None and api_entry.actor.username == "integration-pipeline"
    assert api_entry.remote_addr == "127.0.0.1"
    [portal_entry] = status_changes(by_portal)
    assert portal_entry.actor is not None and portal_entry.actor.username == "fleet-administrator"
    page = operator.get(f"/portal/devices/{by_api.id}/").content.decode()
    assert "update by integration-pipeline from 127.0.0.1" in page
    assert "by the system" not in page
    # Naming the actor leaves no signal receiver behind (auditlog's set_actor would).
    assert len(pre_save._live_receivers(LogEntry)[0]) == receivers


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (
            "3A87606EA7D793013B367C6BC424730268911775",
            "3A87606E<wbr>A7D79301<wbr>3B367C6B<wbr>C4247302<wbr>68911775",
        ),
        ("2001:db8::8a2e:370:7348", "2001:<wbr>db8:<wbr>:<wbr>8a2e:<wbr>370:<wbr>7348"),
        ("HW-0000-4000", "HW-<wbr>0000-<wbr>4000"),
        ("cessationOfOperation", "cessationOfOperation"),  # words stay whole
        ("<b>&'", "&lt;b&gt;&amp;&#x27;"),
    ],
)
def test_breakable_ids(value: str, rendered: str) -> None:
    template = Template("{% load portal %}{{ value|breakable }}")
    assert template.render(Context({"value": value})) == rendered
