"""Expiry alerts: e-mailed to the operators once per threshold, shown on the front page."""

from __future__ import annotations

import datetime as dt
from typing import Any

import time_machine
from django.test import Client

from devices.alerts import send_expiry_alerts
from devices.tasks import expiry_alerts_task
from pki.authority import initialize_ca
from pki.issuance import issue_certificate
from pki.keystore import CertificateAuthority
from pki.profiles import KeyType


def test_each_certificate_is_alerted_once(
    ca: CertificateAuthority, make_user: Any, settings: Any, mailoutbox: Any
) -> None:
    operator = make_user("ops", "Operators")
    operator.email = "ops@example.com"
    operator.save()
    make_user("reader", "Auditors").save()
    settings.CERT_VALIDITY_DAYS = 40
    soon = issue_certificate("soon", key_type=KeyType.EC_P256).record
    issue_certificate("later", key_type=KeyType.EC_P256, validity_days=400)

    assert expiry_alerts_task.delay().get() == 0  # 40 days out: not yet
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=15)):
        assert send_expiry_alerts() == 1
        assert send_expiry_alerts() == 0  # same threshold: not again
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == ["ops@example.com"]
    assert soon.serial in message.body and "later" not in message.body


def test_the_ca_itself_is_alerted(fresh_ca_root: Any, db: Any, make_user: Any, mailoutbox: Any) -> None:
    initialize_ca(validity_days=20, key_type=KeyType.EC_P256)
    operator = make_user("ops", "Operators")
    operator.email = "ops@example.com"
    operator.save()
    assert send_expiry_alerts() == 1
    assert "certificate authority itself expires" in mailoutbox[0].body


def test_front_page_shows_what_expires_soon_to_staff_only(
    ca: CertificateAuthority, settings: Any, make_user: Any, verified_login: Any
) -> None:
    settings.CERT_VALIDITY_DAYS = 10
    issue_certificate("soon", key_type=KeyType.EC_P256)
    staff_page = verified_login(Client(), make_user("watcher", "Auditors")).get("/").content.decode()
    assert "1 device certificate(s) expire within 30 days" in staff_page
    assert "1 active" in staff_page
    public_page = Client().get("/").content.decode()
    assert "expire within" not in public_page and "active" not in public_page
    assert "Test Session CA" in public_page  # the CA itself is public
