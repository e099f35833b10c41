"""The pure certificate and CRL builders, without a database."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pki.crl
from pki import errors
from pki.csr import parse_csr
from pki.lint import lint_certificate, lint_crl
from pki.profiles import (
    CertificateRequest,
    KeyType,
    RevocationReason,
    RevokedEntry,
    build_ca_certificate,
    build_crl,
    end_entity_builder,
    serial_hex,
)
from tests.support.helpers import assert_crl_contains, assert_signed_by, make_csr

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_CERT = build_ca_certificate(
    CA_KEY, common_name="Unit CA", not_before=NOW, not_after=NOW + dt.timedelta(days=100), serial=12345
)


def device_certificate(public_key, *, days: int = 30, crl_url: str = "http://portal.test/ca.crl"):
    request = CertificateRequest(
        common_name="3f1c2f0e-7a55-4c35-9d7e-0b0c0d0e0f10",
        public_key=public_key,
        serial=x509.random_serial_number(),
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=days),
        crl_url=crl_url,
    )
    return end_entity_builder(request, CA_CERT).sign(CA_KEY, hashes.SHA256())


class TestCACertificate:
    def test_is_a_critical_ca_with_cert_and_crl_signing_only(self) -> None:
        constraints = CA_CERT.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca is True
        usage = CA_CERT.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical
        assert usage.value.key_cert_sign and usage.value.crl_sign and not usage.value.digital_signature
        assert CA_CERT.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        assert CA_CERT.version is x509.Version.v3

    def test_passes_rfc5280_lint(self) -> None:
        assert lint_certificate(CA_CERT) == []


class TestDeviceProfile:
    @pytest.mark.parametrize("key_type", list(KeyType))
    def test_profile_for_each_key_type(self, key_type: KeyType) -> None:
        key = key_type.generate()
        certificate = device_certificate(key.public_key())
        assert_signed_by(certificate, CA_CERT)
        extensions = certificate.extensions
        constraints = extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca is False
        usage = extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature
        # keyEncipherment only where the key can encipher (RSA).
        assert usage.value.key_encipherment is (key_type is not KeyType.EC_P256)
        assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            ExtendedKeyUsageOID.CLIENT_AUTH
        ]
        assert extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value == (
            x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        )
        aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ca_ski = CA_CERT.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ca_ski.digest
        points = extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert points[0].full_name == [x509.UniformResourceIdentifier("http://portal.test/ca.crl")]
        assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
            "3f1c2f0e-7a55-4c35-9d7e-0b0c0d0e0f10"
        )
        assert lint_certificate(certificate) == []

    def test_validity_never_passes_the_ca(self) -> None:
        certificate = device_certificate(CA_KEY.public_key(), days=1000)
        assert certificate.not_valid_after_utc == CA_CERT.not_valid_after_utc

    def test_linter_catches_a_broken_certificate(self) -> None:
        # An empty-host URI in the CRL distribution point breaks RFC 5280 4.2.1.13.
        certificate = device_certificate(CA_KEY.public_key(), crl_url="not a uri")
        assert lint_certificate(certificate) != []


class TestCSR:
    @pytest.mark.parametrize("key_type", list(KeyType))
    def test_accepts_allowed_keys_and_reports_their_type(self, key_type: KeyType) -> None:
        key = key_type.generate()
        parsed = parse_csr(make_csr(key))
        assert parsed.key_type is key_type

    def test_garbage_is_not_a_csr(self) -> None:
        with pytest.raises(errors.InvalidCSR, match="not a PEM certificate request"):
            parse_csr("hello")

    def test_damaged_pem(self) -> None:
        lines = make_csr(ec.generate_private_key(ec.SECP256R1())).splitlines()
        truncated = b"\n".join([lines[0], lines[1], lines[-1]])  # body cut short
        with pytest.raises(errors.InvalidCSR, match="could not be parsed"):
            parse_csr(truncated)

    def test_signature_that_does_not_match_the_key(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.load_pem_x509_csr(make_csr(key))
        der = bytearray(csr.public_bytes(serialization.Encoding.DER))
        der[-5] ^= 0x01  # flip a bit inside the signature
        body = base64.encodebytes(bytes(der)).decode()
        tampered = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"
        with pytest.raises(errors.CSRSignatureInvalid):
            parse_csr(tampered)

    def test_weak_rsa_key_is_refused(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key is the point
        with pytest.raises(errors.CSRKeyNotAllowed, match="1024 bits"):
            parse_csr(make_csr(key))

    def test_curve_off_the_allow_list_is_refused(self) -> None:
        with pytest.raises(errors.CSRKeyNotAllowed, match="secp384r1"):
            parse_csr(make_csr(ec.generate_private_key(ec.SECP384R1())))

    def test_unsupported_algorithm_is_refused(self) -> None:
        with pytest.raises(errors.CSRKeyNotAllowed, match="not accepted"):
            parse_csr(make_csr(ed25519.Ed25519PrivateKey.generate()))

    def test_oversized_input_is_refused_before_parsing(self) -> None:
        with pytest.raises(errors.InvalidCSR, match="at most"):
            parse_csr(b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"A" * 20000)


class TestRevocationReason:
    def test_default_is_unspecified(self) -> None:
        assert RevocationReason.parse(None) is RevocationReason.UNSPECIFIED

    def test_rfc5280_names(self) -> None:
        assert RevocationReason.parse("keyCompromise").flag is x509.ReasonFlags.key_compromise

    def test_unknown_reason_names_the_choices(self) -> None:
        with pytest.raises(errors.InvalidRevocationReason, match="superseded"):
            RevocationReason.parse("lost-it")


def test_serial_hex_is_what_openssl_prints() -> None:
    assert serial_hex(0x0ABC) == "0ABC"
    assert serial_hex(0xABC) == "0ABC"
    assert serial_hex(0x1ABC) == "1ABC"


# --- CRL building: a property over any set of revoked serials ---

serials = st.integers(min_value=1, max_value=(1 << 159) - 1)
reasons = st.sampled_from(list(RevocationReason))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.dictionaries(serials, reasons, max_size=40),
    crl_number=st.integers(min_value=1, max_value=(1 << 63)),
)
def test_crl_lists_exactly_the_revoked_serials(entries: dict[int, RevocationReason], crl_number: int) -> None:
    revoked = [
        RevokedEntry(serial=serial, revoked_at=NOW - dt.timedelta(minutes=index), reason=reason)
        for index, (serial, reason) in enumerate(entries.items())
    ]
    crl = build_crl(
        issuer=CA_CERT,
        signing_key=CA_KEY,
        revoked=revoked,
        crl_number=crl_number,
        this_update=NOW,
        next_update=NOW + dt.timedelta(hours=72),
    )
    assert crl.is_signature_valid(CA_KEY.public_key())
    assert_crl_contains(crl, entries)
    assert pki.crl.crl_number(crl) == crl_number
    assert crl.next_update_utc is not None and crl.next_update_utc > NOW
    for entry in crl:
        expected = entries[entry.serial_number]
        if expected is RevocationReason.UNSPECIFIED:
            # RFC 5280 5.3.1: reasonCode unspecified is omitted, not stated.
            with pytest.raises(x509.ExtensionNotFound):
                entry.extensions.get_extension_for_class(x509.CRLReason)
        else:
            assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is expected.flag
    assert lint_crl(crl) == []
