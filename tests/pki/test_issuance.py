"""Issuing and revoking device certificates with the real CA, checked with real tools."""

from __future__ import annotations

import datetime as dt
import errno
import os
from pathlib import Path
from typing import Any

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

import pki.crl
from pki import errors
from pki.authority import initialize_ca
from pki.crl import crl_number, crl_refresh_due, publish_crl
from pki.csr import parse_csr
from pki.issuance import issue_certificate, record_certificate, sign_certificate
from pki.keystore import CertificateAuthority, keystore
from pki.models import Certificate, CertificateRevocationList, CertificateStatus
from pki.profiles import DEVICE_PROFILE, EndEntityProfile, KeyType, RevocationReason, serial_hex
from pki.revocation import revoke_certificate
from tests.support.helpers import (
    assert_crl_contains,
    assert_signed_by,
    lint_certificate_file,
    lint_crl_file,
    make_csr,
    openssl_verify,
    pem,
    run_tool,
)


def load_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


@pytest.mark.parametrize("key_type", list(KeyType))
def test_issued_certificate_passes_lint_and_openssl(
    ca: CertificateAuthority, key_type: KeyType, tmp_path: Path
) -> None:
    issued = issue_certificate("device-under-test", key_type=key_type)
    assert issued.private_key is not None
    assert_signed_by(issued.certificate, ca.certificate)
    certificate_file = tmp_path / "device.crt"
    certificate_file.write_bytes(pem(issued.certificate))

    lint = lint_certificate_file(certificate_file)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    verify = openssl_verify(
        keystore().certificate_path, certificate_file, "-x509_strict", "-purpose", "sslclient"
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert issued.record.key_type == key_type.value
    assert issued.record.status == CertificateStatus.ACTIVE


def test_csr_subject_is_ignored_and_no_key_is_returned(ca: CertificateAuthority) -> None:
    device_key = ec.generate_private_key(ec.SECP256R1())
    issued = issue_certificate("the-device-id", csr=parse_csr(make_csr(device_key, "someone-else")))
    assert issued.private_key is None
    assert issued.record.from_csr
    assert issued.certificate.subject.rfc4514_string() == "CN=the-device-id"
    assert issued.certificate.public_key() == device_key.public_key()


def test_serials_are_positive_large_unique_and_match_the_pem(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    records = [issue_certificate(f"device-{index}", key_type=KeyType.EC_P256).record for index in range(40)]
    serials = [record.serial_number for record in records]
    assert len(set(serials)) == len(serials)
    for record in records:
        # RFC 5280 4.1.2.2: positive and at most 20 octets.
        assert 0 < record.serial_number < 1 << 160
        assert record.load().serial_number == record.serial_number
    # At least 64 bits of randomness: with 159 random bits, 40 serials below 2**64 would be
    # astronomically unlikely, so all are larger.
    assert min(serials) > 1 << 64
    certificate_file = tmp_path / "one.crt"
    certificate_file.write_text(records[0].pem)
    printed = run_tool("openssl", "x509", "-noout", "-serial", "-in", certificate_file, check=True).stdout
    assert printed.strip() == f"serial={records[0].serial}"


def test_serial_collision_is_retried(ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = issue_certificate("first", key_type=KeyType.EC_P256).record.serial_number
    fresh = x509.random_serial_number()
    draws = iter([taken, fresh])
    monkeypatch.setattr(x509, "random_serial_number", lambda: next(draws))
    second = issue_certificate("second", key_type=KeyType.EC_P256)
    assert second.record.serial == serial_hex(fresh)


def test_a_serial_taken_between_signing_and_recording_is_signed_again(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workflows sign before their transaction; another process may record the serial meanwhile.
    shared, fresh = x509.random_serial_number(), x509.random_serial_number()
    draws = iter([shared, shared, fresh])
    monkeypatch.setattr(x509, "random_serial_number", lambda: next(draws))
    device_key = KeyType.EC_P256.generate()
    first = sign_certificate("first", key_type=KeyType.EC_P256)
    second = sign_certificate("second", private_key=device_key)
    record_certificate(first)

    recorded = record_certificate(second)

    assert recorded.record.serial == serial_hex(fresh)
    assert recorded.certificate.serial_number == fresh
    assert recorded.private_key is device_key
    assert recorded.certificate.public_key() == device_key.public_key()


def test_certificate_that_fails_lint_is_never_signed_by_the_ca(ca: CertificateAuthority) -> None:
    before = Certificate.objects.count()
    broken = EndEntityProfile(
        extended_key_usage=DEVICE_PROFILE.extended_key_usage, dns_names=("not a host!",)
    )
    with pytest.raises(errors.CertificateLintError, match="RFC 5280"):
        issue_certificate("device", key_type=KeyType.EC_P256, profile=broken)
    assert Certificate.objects.count() == before


def test_validity_is_capped_at_the_ca_end(fresh_ca_root: Path, settings, db) -> None:
    initialize_ca(validity_days=10, key_type=KeyType.EC_P256)
    settings.CERT_VALIDITY_DAYS = 365
    issued = issue_certificate("device", key_type=KeyType.EC_P256)
    ca_certificate = x509.load_pem_x509_certificate(keystore().certificate_path.read_bytes())
    assert issued.certificate.not_valid_after_utc == ca_certificate.not_valid_after_utc


def test_certificate_validity_follows_the_setting(ca: CertificateAuthority, settings) -> None:
    settings.CERT_VALIDITY_DAYS = 7
    issued = issue_certificate("device", key_type=KeyType.EC_P256)
    lifetime = issued.certificate.not_valid_after_utc - issued.certificate.not_valid_before_utc
    assert dt.timedelta(days=7) <= lifetime <= dt.timedelta(days=7, minutes=6)


def test_expired_ca_issues_nothing(ca: CertificateAuthority) -> None:
    after_the_ca = ca.certificate.not_valid_after_utc + dt.timedelta(days=1)
    with (
        time_machine.travel(after_the_ca, tick=False),
        pytest.raises(errors.CAKeyError, match="expired"),
    ):
        issue_certificate("late", key_type=KeyType.EC_P256)


class TestRevocation:
    def test_revoked_certificate_is_on_the_crl_and_refused_by_openssl(
        self, ca: CertificateAuthority, crl_file: Path, tmp_path: Path
    ) -> None:
        issued = issue_certificate("device", key_type=KeyType.EC_P256)
        revoke_certificate(issued.record, RevocationReason.KEY_COMPROMISE)
        issued.record.refresh_from_db()
        assert issued.record.status == CertificateStatus.REVOKED
        assert issued.record.revocation_reason == "keyCompromise"

        crl = load_crl(crl_file)
        assert issued.record.serial_number in {entry.serial_number for entry in crl}
        lint = lint_crl_file(crl_file)
        assert lint.returncode == 0, lint.stdout + lint.stderr

        certificate_file = tmp_path / "device.crt"
        certificate_file.write_text(issued.record.pem)
        ca_file = keystore().certificate_path
        verify = openssl_verify(ca_file, certificate_file, "-crl_check", "-CRLfile", crl_file)
        assert verify.returncode != 0
        assert "certificate revoked" in verify.stdout + verify.stderr

    def test_crl_lists_exactly_the_unexpired_revoked(self, ca: CertificateAuthority, crl_file: Path) -> None:
        kept = [issue_certificate(f"d{index}", key_type=KeyType.EC_P256).record for index in range(3)]
        for record in kept[:2]:
            revoke_certificate(record)
        already_on_crl = {record.serial_number for record in Certificate.objects.on_crl()}
        assert_crl_contains(load_crl(crl_file), already_on_crl)
        assert {record.serial_number for record in kept[:2]} <= already_on_crl
        assert kept[2].serial_number not in already_on_crl

    def test_revoking_twice_is_refused_and_adds_no_crl(
        self, ca: CertificateAuthority, crl_file: Path
    ) -> None:
        record = issue_certificate("device", key_type=KeyType.EC_P256).record
        revoke_certificate(record)
        number = crl_number(load_crl(crl_file))
        with pytest.raises(errors.CertificateAlreadyRevoked):
            revoke_certificate(record)
        assert crl_number(load_crl(crl_file)) == number

    def test_crl_number_only_grows_and_next_update_is_ahead(
        self, ca: CertificateAuthority, crl_file: Path
    ) -> None:
        numbers = []
        for _ in range(3):
            record = publish_crl()
            crl = load_crl(crl_file)
            numbers.append(crl_number(crl))
            assert crl_number(crl) == record.number
            assert crl.next_update_utc is not None and crl.next_update_utc > dt.datetime.now(dt.UTC)
        assert numbers == sorted(numbers) and len(set(numbers)) == 3

    def test_crl_number_continues_past_a_database_that_forgot(
        self, ca: CertificateAuthority, crl_file: Path
    ) -> None:
        publish_crl()
        on_disk = crl_number(load_crl(crl_file))
        CertificateRevocationList.objects.all().delete()  # as after restoring an older backup
        publish_crl()
        assert crl_number(load_crl(crl_file)) == on_disk + 1

    def test_expired_certificates_leave_the_crl(
        self, ca: CertificateAuthority, crl_file: Path, settings
    ) -> None:
        settings.CERT_VALIDITY_DAYS = 2
        record = issue_certificate("short-lived", key_type=KeyType.EC_P256).record
        revoke_certificate(record)
        assert record.serial_number in {entry.serial_number for entry in load_crl(crl_file)}
        with time_machine.travel(record.not_after + dt.timedelta(hours=1)):
            publish_crl()
        assert record.serial_number not in {entry.serial_number for entry in load_crl(crl_file)}

    def test_failed_crl_write_rolls_the_revocation_back(
        self, ca: CertificateAuthority, crl_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        record = issue_certificate("device", key_type=KeyType.EC_P256).record
        before = crl_file.read_bytes()

        def disk_full(path: Path, data: bytes, mode: int = 0o644) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(pki.crl, "write_atomically", disk_full)
        with pytest.raises(errors.CRLPublicationError, match="No space left on device"):
            revoke_certificate(record)
        record.refresh_from_db()
        assert record.status == CertificateStatus.ACTIVE
        assert crl_file.read_bytes() == before


def test_ca_key_is_loaded_once_per_process(ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    from pki import keystore as keystore_module

    loads = []
    original = keystore_module.FileKeyStore.load

    def counting_load(self):
        loads.append(1)
        return original(self)

    keystore_module.forget_loaded_ca()
    monkeypatch.setattr(keystore_module.FileKeyStore, "load", counting_load)
    for index in range(3):
        issue_certificate(f"d{index}", key_type=KeyType.EC_P256)
    assert len(loads) == 1


def test_refresh_crl_resigns_at_half_validity(
    ca: CertificateAuthority, crl_file: Path, settings, tmp_path
) -> None:
    from io import StringIO

    from django.core.management import call_command

    settings.BROKER_ACL_FILE = tmp_path / "acl"
    settings.BROKER_CRL_FILE = tmp_path / "broker-crl.pem"
    publish_crl()
    first = crl_number(load_crl(crl_file))
    out = StringIO()
    call_command("refresh_crl", stdout=out)
    assert "fresh; nothing to do" in out.getvalue()
    assert crl_number(load_crl(crl_file)) == first
    half_way = dt.datetime.now(dt.UTC) + dt.timedelta(hours=settings.CRL_VALIDITY_HOURS / 2, minutes=1)
    with time_machine.travel(half_way):
        assert crl_refresh_due()
        call_command("refresh_crl", stdout=out)
        renewed = load_crl(crl_file)
        assert crl_number(renewed) == first + 1
        assert renewed.next_update_utc is not None
        assert renewed.next_update_utc > dt.datetime.now(dt.UTC) + dt.timedelta(
            hours=settings.CRL_VALIDITY_HOURS - 1
        )
    assert (tmp_path / "broker-crl.pem").read_bytes() == crl_file.read_bytes()


def test_crl_entries_carry_each_revocation_time_and_reason(ca: CertificateAuthority, crl_file: Path) -> None:
    first = issue_certificate("early", key_type=KeyType.EC_P256).record
    later = issue_certificate("later", key_type=KeyType.EC_P256).record
    revoke_certificate(first, RevocationReason.KEY_COMPROMISE)
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)):
        revoke_certificate(later, RevocationReason.SUPERSEDED)
        crl = load_crl(crl_file)
    for record, reason in ((first, x509.ReasonFlags.key_compromise), (later, x509.ReasonFlags.superseded)):
        record.refresh_from_db()
        entry = crl.get_revoked_certificate_by_serial_number(int(record.serial, 16))
        assert entry is not None and record.revoked_at is not None
        assert entry.revocation_date_utc == record.revoked_at.replace(microsecond=0)
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == reason


def test_crl_publication_pauses_the_garbage_collector_only_while_it_builds(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    seen: list[bool] = []
    from pki.profiles import build_crl as real_build

    def watching_build(**kwargs: Any) -> x509.CertificateRevocationList:
        seen.append(gc.isenabled())
        return real_build(**kwargs)

    monkeypatch.setattr(pki.crl, "build_crl", watching_build)
    publish_crl()
    assert seen == [False] and gc.isenabled()

    def broken_build(**kwargs: Any) -> x509.CertificateRevocationList:
        raise ValueError("the CA key could not sign")

    monkeypatch.setattr(pki.crl, "build_crl", broken_build)
    with pytest.raises(ValueError):
        publish_crl()
    assert gc.isenabled()  # back on after a failure too

    monkeypatch.setattr(pki.crl, "build_crl", real_build)
    gc.disable()  # a caller that paused it itself keeps it paused
    try:
        publish_crl()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_crl_numbering_follows_a_crl_put_in_place_by_someone_else(
    ca: CertificateAuthority, crl_file: Path
) -> None:
    """The number of the CRL on disk counts even when this process wrote the one before it
    (another process, or a CA directory restored from a backup, replaced the file since)."""
    from cryptography.hazmat.primitives import serialization

    from kernel.fs import write_atomically
    from pki.keystore import get_ca
    from pki.profiles import build_crl

    publish_crl()
    publish_crl()
    ours = crl_number(load_crl(crl_file))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    theirs = build_crl(
        issuer=get_ca().certificate,
        signing_key=get_ca().private_key,
        revoked=[],
        crl_number=ours + 10,
        this_update=now,
        next_update=now + dt.timedelta(hours=1),
    )
    write_atomically(crl_file, theirs.public_bytes(serialization.Encoding.PEM))
    publish_crl()
    assert crl_number(load_crl(crl_file)) == ours + 11
    publish_crl()  # and again, now from the file this process wrote
    assert crl_number(load_crl(crl_file)) == ours + 12
