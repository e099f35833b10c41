"""Enrolment codes (one time, digests only, expiring, locked out after repeated failures) and
enrolment groups (a manufacturer CA vouching for factory certificates): the domain layer the
EST endpoints call."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from audit.models import AuditAction, AuditEvent
from devices.errors import HardwareIdConflict
from devices.models import Device, DeviceStatus
from enrollment import services
from enrollment.errors import (
    EnrollmentCodeExpired,
    EnrollmentCodeInvalid,
    EnrollmentCodeUsed,
    EnrollmentGroupDisabled,
    EnrollmentGroupExists,
    EnrollmentLocked,
    FactoryCertificateExpired,
    FactoryCertificateNoHardwareId,
    FactoryCertificateUntrusted,
    HardwareIdNotAllowed,
    InvalidCACertificate,
)
from enrollment.factory import check_factory_certificate, parse_ca_certificate
from enrollment.models import EnrollmentCode, EnrollmentGroup, code_digest
from kernel.errors import ServiceError
from onboard_cli.text_rules import spreadsheet_safe
from tests.support.manufacturer import (
    DEVICE_USAGE,
    NOW,
    make_ca,
    make_factory_certificate,
    openssl_manufacturer,
)


@pytest.fixture
def device(db: Any) -> Device:
    return Device.objects.create(name="awaiting", status=DeviceStatus.PENDING)


def refusals(reason: str) -> int:
    return sum(
        1
        for event in AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_CODE_REFUSED)
        if event.detail.get("reason") == reason
    )


# --- Enrolment codes ---


def test_a_code_survives_the_bulk_result_file_unchanged() -> None:
    """The bulk results guard cells that start like a formula ('-', '=', '+', '@'): a code must
    never be one, or the factory line would read a code that is not the device's."""
    codes = {EnrollmentCode.new_code() for _ in range(5000)}
    assert len(codes) == 5000
    assert all(spreadsheet_safe(code) == code and ":" not in code for code in codes)


def test_a_code_is_shown_once_stored_as_a_digest_and_redeemed_once(device: Device, settings: Any) -> None:
    code = services.issue_enrollment_code(device)
    assert len(code) >= 22  # at least 128 bits
    stored = EnrollmentCode.objects.get(device=device)
    assert stored.digest == code_digest(code) and code not in stored.digest
    assert abs(stored.expires_at - (timezone.now() + dt.timedelta(days=settings.ENROLLMENT_CODE_DAYS))) < (
        dt.timedelta(minutes=1)
    )
    assert AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_CODE_ISSUED, device_id=device.id).exists()

    assert services.redeem_enrollment_code(str(device.id), code, address="192.0.2.7") == device
    assert EnrollmentCode.objects.get(device=device).used_at is not None
    redeemed = AuditEvent.objects.get(action=AuditAction.ENROLLMENT_CODE_REDEEMED)
    assert (redeemed.device_id, redeemed.address) == (device.id, "192.0.2.7")
    # A replayed code is refused, and the refusal is counted and audited.
    with pytest.raises(EnrollmentCodeUsed) as replayed:
        services.redeem_enrollment_code(device.id, code)
    assert (replayed.value.code, replayed.value.status) == ("enrollment_code_used", 401)
    assert EnrollmentCode.objects.get(device=device).failed_attempts == 1
    assert refusals("enrollment_code_used") == 1


def test_codes_differ_and_a_new_one_replaces_the_old(device: Device) -> None:
    first = services.issue_enrollment_code(device)
    second = services.issue_enrollment_code(device)
    assert first != second
    with pytest.raises(EnrollmentCodeInvalid):
        services.redeem_enrollment_code(device.id, first)
    assert services.redeem_enrollment_code(device.id, second) == device


def test_a_wrong_code_an_unknown_device_and_a_revoked_one_get_the_same_answer(device: Device) -> None:
    code = services.issue_enrollment_code(device)
    for device_id, attempt in (
        (device.id, code + "x"),
        (uuid.uuid4(), code),
        ("not-a-uuid", code),
        (Device.objects.create(name="no code").id, code),
    ):
        with pytest.raises(EnrollmentCodeInvalid) as refused:
            services.check_enrollment_code(device_id, attempt)
        assert (refused.value.code, refused.value.status) == ("enrollment_code_invalid", 401)
        assert refused.value.message == services.INVALID_CODE
    Device.objects.filter(pk=device.pk).update(status=DeviceStatus.REVOKED)
    with pytest.raises(EnrollmentCodeInvalid):
        services.check_enrollment_code(device.id, code)
    assert refusals("enrollment_code_invalid") == 5


def test_an_expired_code_is_refused(device: Device, settings: Any) -> None:
    code = services.issue_enrollment_code(device)
    later = timezone.now() + dt.timedelta(days=settings.ENROLLMENT_CODE_DAYS, seconds=1)
    with pytest.raises(EnrollmentCodeExpired) as expired:
        services.redeem_enrollment_code(device.id, code, now=later)
    assert (expired.value.code, expired.value.status) == ("enrollment_code_expired", 401)
    assert EnrollmentCode.objects.get(device=device).used_at is None
    just_before = timezone.now() + dt.timedelta(days=settings.ENROLLMENT_CODE_DAYS, seconds=-60)
    assert services.redeem_enrollment_code(device.id, code, now=just_before) == device


def test_repeated_failures_lock_the_device_out_even_for_the_right_code(device: Device, settings: Any) -> None:
    settings.ENROLLMENT_CODE_MAX_FAILURES = 3
    settings.ENROLLMENT_CODE_LOCKOUT_MINUTES = 10
    code = services.issue_enrollment_code(device)
    now = timezone.now()
    for _ in range(3):
        with pytest.raises(EnrollmentCodeInvalid):
            services.redeem_enrollment_code(device.id, "guess", now=now)
    with pytest.raises(EnrollmentLocked) as locked:
        services.redeem_enrollment_code(device.id, code, now=now + dt.timedelta(minutes=1))
    assert (locked.value.code, locked.value.status) == ("enrollment_locked", 429)
    assert 8 * 60 < locked.value.details["retry_after"] <= 9 * 60 + 1
    # Refusals while locked are audited but not counted: a flood cannot extend the lockout.
    assert EnrollmentCode.objects.get(device=device).failed_attempts == 0
    assert refusals("enrollment_locked") == 1
    locked_out = [
        event.detail["locked_out"]
        for event in AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_CODE_REFUSED).order_by("pk")
        if event.detail.get("reason") == "enrollment_code_invalid"
    ]
    assert locked_out == ["False", "False", "True"]
    # After the lockout the right code works; the used code is then refused as used.
    after = now + dt.timedelta(minutes=10, seconds=1)
    assert services.redeem_enrollment_code(device.id, code, now=after) == device


def test_a_new_code_clears_the_lockout(device: Device, settings: Any) -> None:
    settings.ENROLLMENT_CODE_MAX_FAILURES = 1
    services.issue_enrollment_code(device)
    with pytest.raises(EnrollmentCodeInvalid):
        services.check_enrollment_code(device.id, "guess")
    with pytest.raises(EnrollmentLocked):
        services.check_enrollment_code(device.id, "guess")
    fresh = services.issue_enrollment_code(device)
    assert services.redeem_enrollment_code(device.id, fresh) == device


def test_consuming_happens_once_even_for_two_checked_copies(device: Device) -> None:
    """Two enrolments that both passed the check: the conditional UPDATE lets one win."""
    code = services.issue_enrollment_code(device)
    first = services.check_enrollment_code(device.id, code)
    second = services.check_enrollment_code(device.id, code)
    assert services.consume_enrollment_code(first) == device
    with pytest.raises(EnrollmentCodeUsed):
        services.consume_enrollment_code(second)


@pytest.mark.django_db(transaction=True)
def test_simultaneous_redemptions_give_the_device_once() -> None:
    device = Device.objects.create(name="raced", status=DeviceStatus.PENDING)
    code = services.issue_enrollment_code(device)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def redeem() -> None:
        try:
            barrier.wait()
            services.redeem_enrollment_code(device.id, code)
            outcomes.append("redeemed")
        except EnrollmentCodeUsed:
            outcomes.append("used")
        finally:
            connection.close()

    threads = [threading.Thread(target=redeem) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["redeemed", "used", "used", "used"]


# --- CA certificates of enrolment groups ---


def test_a_group_ca_must_be_a_valid_ca_certificate() -> None:
    manufacturer = make_ca()
    assert parse_ca_certificate(manufacturer.pem, NOW).subject == manufacturer.certificate.subject
    leaf = make_factory_certificate(manufacturer)
    from tests.support.helpers import pem

    for text, problem in (
        ("", "exactly one"),
        ("not a certificate", "exactly one"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a readable"),
        (manufacturer.pem + manufacturer.pem, "exactly one"),
        # What the PEM reader alone would take: text around the block.
        (manufacturer.pem + "*", "exactly one"),
        ("Certificate:\n    Data: ...\n" + manufacturer.pem, "exactly one"),
        (pem(leaf).decode(), "not a CA certificate"),
        (make_ca(is_ca=False).pem, "not a CA certificate"),
        (make_ca(key_usage=DEVICE_USAGE).pem, "keyUsage"),
    ):
        with pytest.raises(InvalidCACertificate, match=problem) as refused:
            parse_ca_certificate(text, NOW)
        assert (refused.value.code, refused.value.status) == ("invalid_ca_certificate", 400)
    with pytest.raises(InvalidCACertificate, match="not valid now"):
        parse_ca_certificate(manufacturer.pem, NOW + dt.timedelta(days=4000))


# --- Factory certificates: the pure check ---


def test_a_factory_certificate_gives_its_hardware_id_from_serial_number_or_cn() -> None:
    manufacturer = make_ca()
    assert (
        check_factory_certificate(
            make_factory_certificate(manufacturer, "SN-42"), [], manufacturer.certificate, NOW
        )
        == "SN-42"
    )
    by_cn = make_factory_certificate(manufacturer, None, common_name="cn-7")
    assert check_factory_certificate(by_cn, [], manufacturer.certificate, NOW) == "cn-7"
    with pytest.raises(FactoryCertificateNoHardwareId):
        bad = make_factory_certificate(manufacturer, None, common_name="two\nlines")
        check_factory_certificate(bad, [], manufacturer.certificate, NOW)


def test_a_factory_certificate_through_an_intermediate_chains_to_either_ca() -> None:
    root = make_ca("Acme Root CA")
    issuing = make_ca("Acme Issuing CA", parent=root)
    device = make_factory_certificate(issuing, "SN-9")
    assert check_factory_certificate(device, [issuing.certificate], root.certificate, NOW) == "SN-9"
    assert check_factory_certificate(device, [], issuing.certificate, NOW) == "SN-9"
    # An unrelated, expired certificate sent along changes nothing.
    stale = make_factory_certificate(
        make_ca("Old CA"), not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1)
    )
    assert check_factory_certificate(device, [stale, issuing.certificate], root.certificate, NOW) == "SN-9"
    # An expired intermediate is named as the reason.
    old_issuing = make_ca("Acme Old Issuing CA", parent=root, days=1)
    with pytest.raises(FactoryCertificateExpired, match="Acme Old Issuing CA"):
        check_factory_certificate(
            make_factory_certificate(old_issuing),
            [old_issuing.certificate],
            root.certificate,
            NOW + dt.timedelta(days=2),
        )
    # Without the intermediate the root cannot be reached.
    with pytest.raises(FactoryCertificateUntrusted):
        check_factory_certificate(device, [], root.certificate, NOW)


def test_expired_and_not_yet_valid_factory_certificates_are_refused() -> None:
    manufacturer = make_ca()
    expired = make_factory_certificate(
        manufacturer, not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1)
    )
    with pytest.raises(FactoryCertificateExpired) as refused:
        check_factory_certificate(expired, [], manufacturer.certificate, NOW)
    assert (refused.value.code, refused.value.status) == ("factory_certificate_expired", 401)
    future = make_factory_certificate(manufacturer, not_before=NOW + dt.timedelta(days=1))
    with pytest.raises(FactoryCertificateExpired):
        check_factory_certificate(future, [], manufacturer.certificate, NOW)
    # The CA's own validity counts too.
    with pytest.raises(FactoryCertificateExpired):
        check_factory_certificate(
            make_factory_certificate(manufacturer),
            [],
            manufacturer.certificate,
            NOW + dt.timedelta(days=3700),
        )


def test_a_certificate_from_another_ca_or_unfit_for_clients_is_untrusted() -> None:
    manufacturer, stranger = make_ca(), make_ca()  # the same name, another key
    with pytest.raises(FactoryCertificateUntrusted) as refused:
        check_factory_certificate(make_factory_certificate(stranger), [], manufacturer.certificate, NOW)
    assert (refused.value.code, refused.value.status) == ("factory_certificate_untrusted", 401)
    # Expired as well as foreign: untrusted, not "expired" (the signature is checked first).
    old_stranger = make_factory_certificate(stranger, not_after=NOW - dt.timedelta(hours=1))
    with pytest.raises(FactoryCertificateUntrusted):
        check_factory_certificate(old_stranger, [], manufacturer.certificate, NOW)
    with pytest.raises(FactoryCertificateUntrusted, match="clientAuth"):
        check_factory_certificate(
            make_factory_certificate(manufacturer, client_auth=False), [], manufacturer.certificate, NOW
        )
    # A CA certificate of the manufacturer is no device.
    sub_ca = make_ca("Acme Sub CA", parent=manufacturer)
    with pytest.raises(FactoryCertificateUntrusted):
        check_factory_certificate(sub_ca.certificate, [], manufacturer.certificate, NOW)


# --- Enrolment groups ---


def make_group(issuer: Any, name: str = "Acme sensors", **fields: Any) -> EnrollmentGroup:
    return services.create_enrollment_group(name=name, ca_certificate=issuer.pem, **fields)


def test_a_group_keeps_its_ca_subject_and_fingerprint_and_refuses_duplicates(db: Any) -> None:
    manufacturer = make_ca()
    group = make_group(manufacturer, allowed_hardware_ids=["A", "B", "A"])
    assert group.ca_subject == manufacturer.certificate.subject.rfc4514_string()
    assert len(group.ca_fingerprint) == 64 and group.allowed_hardware_ids == ["A", "B"]
    assert AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_GROUP_CREATED).count() == 1
    with pytest.raises(EnrollmentGroupExists, match="named"):
        make_group(make_ca())
    with pytest.raises(EnrollmentGroupExists, match="belongs to") as same_ca:
        make_group(manufacturer, name="other name")
    assert (same_ca.value.status, same_ca.value.details["group_id"]) == (409, str(group.pk))


def test_match_finds_the_group_and_returns_the_hardware_id(db: Any) -> None:
    manufacturer = make_ca()
    group = make_group(manufacturer)
    make_group(make_ca("Other Manufacturer CA"), name="Other")
    assert services.match_enrollment_group(make_factory_certificate(manufacturer, "SN-1")) == (group, "SN-1")


def test_each_refusal_of_a_factory_certificate_is_audited(db: Any) -> None:
    manufacturer = make_ca()
    group = make_group(manufacturer, allowed_hardware_ids=["SN-1", "SN-2"])
    Device.objects.create(name="already here", hardware_id="SN-2")
    cases: list[tuple[Any, type[ServiceError], int]] = [
        (make_factory_certificate(make_ca(), "SN-1"), FactoryCertificateUntrusted, 401),
        (make_factory_certificate(make_ca("Unknown CA"), "SN-1"), FactoryCertificateUntrusted, 401),
        (
            make_factory_certificate(manufacturer, "SN-1", not_after=NOW - dt.timedelta(days=1),
                                     not_before=NOW - dt.timedelta(days=9)),
            FactoryCertificateExpired,
            401,
        ),
        (make_factory_certificate(manufacturer, "SN-3"), HardwareIdNotAllowed, 403),
        (make_factory_certificate(manufacturer, "SN-2"), HardwareIdConflict, 409),
    ]  # fmt: skip
    for certificate, error, status in cases:
        with pytest.raises(error) as refused:
            services.match_enrollment_group(certificate, address="198.51.100.4")
        assert refused.value.status == status
    services.update_enrollment_group(group, enabled=False)
    with pytest.raises(EnrollmentGroupDisabled) as disabled:
        services.match_enrollment_group(make_factory_certificate(manufacturer, "SN-1"))
    assert (disabled.value.code, disabled.value.status) == ("enrollment_group_disabled", 403)
    events = list(AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_REFUSED).order_by("pk"))
    assert [event.detail["reason"] for event in events] == [
        "factory_certificate_untrusted",
        "factory_certificate_untrusted",
        "factory_certificate_expired",
        "hardware_id_not_allowed",
        "hardware_id_exists",
        "enrollment_group_disabled",
    ]
    assert events[3].detail["group"] == "Acme sensors" and events[3].detail["hardware_id"] == "SN-3"
    assert events[0].address == "198.51.100.4"


def test_an_empty_allow_list_admits_every_device_and_changes_are_audited(db: Any) -> None:
    manufacturer = make_ca()
    group = make_group(manufacturer, allowed_hardware_ids=["SN-1"])
    services.update_enrollment_group(group, allowed_hardware_ids=[])
    assert services.match_enrollment_group(make_factory_certificate(manufacturer, "SN-77"))[1] == "SN-77"
    changed = AuditEvent.objects.get(action=AuditAction.ENROLLMENT_GROUP_CHANGED)
    assert changed.detail["allowed_hardware_ids"] == "0 hardware ids"
    services.update_enrollment_group(group, allowed_hardware_ids=[])  # no change, no record
    assert AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_GROUP_CHANGED).count() == 1
    services.delete_enrollment_group(group)
    assert AuditEvent.objects.filter(action=AuditAction.ENROLLMENT_GROUP_DELETED).count() == 1
    with pytest.raises(FactoryCertificateUntrusted):
        services.match_enrollment_group(make_factory_certificate(manufacturer, "SN-77"))


@pytest.mark.slow
def test_an_openssl_made_manufacturer_interoperates(db: Any, tmp_path: Path) -> None:
    """A CA and factory certificate made by the openssl command line, as a factory's tooling would."""
    made = openssl_manufacturer(tmp_path / "factory", "OSSL-0001")
    group = services.create_enrollment_group(name="Openssl devices", ca_certificate=made.ca_pem)
    assert services.match_enrollment_group(made.device) == (group, "OSSL-0001")
    # Past its 365 days, the same certificate is expired.
    with pytest.raises(FactoryCertificateExpired):
        services.match_enrollment_group(made.device, now=NOW + dt.timedelta(days=400))
    # Another openssl manufacturer with the same CA name but its own key: untrusted.
    stranger = openssl_manufacturer(tmp_path / "stranger", "OSSL-0001")
    with pytest.raises(FactoryCertificateUntrusted):
        services.match_enrollment_group(stranger.device)
    # On the allow-list or not, taken or not, in a disabled group or not.
    services.update_enrollment_group(group, allowed_hardware_ids=["OSSL-0002"])
    with pytest.raises(HardwareIdNotAllowed):
        services.match_enrollment_group(made.device)
    services.update_enrollment_group(group, allowed_hardware_ids=[])
    Device.objects.create(name="first", hardware_id="OSSL-0001")
    with pytest.raises(HardwareIdConflict):
        services.match_enrollment_group(made.device)
    services.update_enrollment_group(group, enabled=False)
    with pytest.raises(EnrollmentGroupDisabled):
        services.match_enrollment_group(made.device)


def test_settings_that_would_refuse_every_device_stop_start_up(settings: Any) -> None:
    from enrollment.checks import check_enrollment_settings

    assert check_enrollment_settings() == []
    settings.ENROLLMENT_CODE_DAYS = 0
    settings.ENROLLMENT_CODE_MAX_FAILURES = 0
    assert [error.id for error in check_enrollment_settings()] == ["enrollment.E001", "enrollment.E002"]
