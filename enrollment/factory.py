"""Factory certificates (IDevIDs) and the CA certificates of enrolment groups: pure checks on
plain values, no database.

The chain is verified with `cryptography.x509.verification` (the client verifier: RFC 5280
path building, signatures, validity of every certificate, basicConstraints and keyUsage of the
CAs). The group's CA is the trust anchor, root or intermediate. The factory certificate itself
is held to what a client certificate needs, not to the web PKI's rules for TLS clients: an
IDevID carries no subjectAltName or extendedKeyUsage as a rule, so those are checked here only
when present.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from enrollment.errors import (
    FactoryCertificateExpired,
    FactoryCertificateNoHardwareId,
    FactoryCertificateUntrusted,
    InvalidCACertificate,
)
from onboard_cli import text_rules

MAX_CA_PEM_LENGTH = 16 * 1024
PEM_CERTIFICATE_PATTERN = (
    r"^[\t\n\r ]*-----BEGIN CERTIFICATE-----[\t ]*\r?\n"
    r"(?:[A-Za-z0-9+/=]+[\t ]*\r?\n)+"
    r"-----END CERTIFICATE-----[\t\n\r ]*$"
)
Extension = TypeVar("Extension", bound=x509.ExtensionType)

_PEM_CERTIFICATE = re.compile(PEM_CERTIFICATE_PATTERN)

# A factory certificate's chain is short: the IDevID, maybe an issuing CA, the group's CA.
MAX_CHAIN_DEPTH = 4
# Certificates a device may send beside its own; more is no factory chain.
MAX_CHAIN_LENGTH = 8


def fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def parse_ca_certificate(pem: str, now: dt.datetime) -> x509.Certificate:
    """One PEM certificate that may sign others: basicConstraints CA:TRUE, keyCertSign when it
    states its key usage, valid at `now`. Raises InvalidCACertificate naming what is wrong."""
    if len(pem) > MAX_CA_PEM_LENGTH:
        raise InvalidCACertificate(f"The CA certificate is longer than {MAX_CA_PEM_LENGTH} characters.")
    # The shape the API schema documents, and nothing around it: the PEM reader alone would skip
    # text before and after the block, and take the first of several.
    if pem.count("-----BEGIN CERTIFICATE-----") != 1 or not _PEM_CERTIFICATE.fullmatch(pem):
        raise InvalidCACertificate(
            "Give exactly one PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----) "
            "and nothing else."
        )
    text = pem.strip()
    try:
        certificate = x509.load_pem_x509_certificate(text.encode())
    except (ValueError, UnicodeEncodeError):
        raise InvalidCACertificate("The CA certificate is not a readable PEM X.509 certificate.") from None
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError:  # a malformed extension
        raise InvalidCACertificate("The CA certificate has an extension that cannot be read.") from None
    if constraints is None or not constraints.ca:
        raise InvalidCACertificate("The certificate is not a CA certificate (basicConstraints CA:TRUE).")
    usage = _extension(certificate, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise InvalidCACertificate("The CA certificate's keyUsage does not allow signing certificates.")
    if not _valid_at(certificate, now):
        raise InvalidCACertificate(
            f"The CA certificate is not valid now (from {certificate.not_valid_before_utc:%Y-%m-%d} "
            f"to {certificate.not_valid_after_utc:%Y-%m-%d})."
        )
    return certificate


def check_factory_certificate(
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    group_ca: x509.Certificate,
    now: dt.datetime,
) -> str:
    """Verify that `group_ca` vouches for the factory certificate and return its hardware id.

    `chain` holds the intermediates the device sent (may be empty, may include the group's CA).
    Raises FactoryCertificateExpired when a certificate of the path is outside its validity,
    FactoryCertificateUntrusted when the path does not lead to `group_ca` or the certificate
    may not authenticate a client, FactoryCertificateNoHardwareId when it names no usable id.
    """
    if len(chain) > MAX_CHAIN_LENGTH:
        raise FactoryCertificateUntrusted(f"The chain sent holds more than {MAX_CHAIN_LENGTH} certificates.")
    try:
        _verified_path(certificate, chain, group_ca, now)
    except VerificationError as error:
        # Refused now. If the path holds at another moment, it is a path to the group's CA with a
        # certificate out of its validity: "expired". Otherwise, expired or not, "untrusted".
        path = _path_at_some_moment(certificate, chain, group_ca)
        outside = [member for member in path if not _valid_at(member, now)]
        if not outside:
            raise FactoryCertificateUntrusted(
                f"The factory certificate does not chain to the group's CA ({error})."
            ) from None
        raise FactoryCertificateExpired(
            f"The certificate '{outside[0].subject.rfc4514_string()}' is not valid now (from "
            f"{outside[0].not_valid_before_utc:%Y-%m-%d} to {outside[0].not_valid_after_utc:%Y-%m-%d})."
        ) from None
    _refuse_unfit_for_client_authentication(certificate)
    return hardware_id_of(certificate)


def _verified_path(
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    group_ca: x509.Certificate,
    moment: dt.datetime,
) -> list[x509.Certificate]:
    """The path from the certificate to the group's CA, valid at `moment` (RFC 5280 6.1).
    Raises VerificationError; FactoryCertificateUntrusted for an extension that cannot be read."""
    verifier = (
        PolicyBuilder()
        .store(Store([group_ca]))
        .time(moment)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(certificate, list(chain)).chain)
    except ValueError:  # a malformed extension met on the way
        raise FactoryCertificateUntrusted(
            "The factory certificate has an extension that cannot be read."
        ) from None


def _path_at_some_moment(
    certificate: x509.Certificate, chain: Sequence[x509.Certificate], group_ca: x509.Certificate
) -> list[x509.Certificate]:
    """A path that was (or will be) valid at the start or end of some certificate's validity;
    empty when there is none. Only for telling "expired" from "untrusted" after a refusal."""
    moments = set()
    for member in (certificate, *chain, group_ca):
        moments |= {member.not_valid_before_utc, member.not_valid_after_utc}
    for moment in sorted(moments):
        try:
            return _verified_path(certificate, chain, group_ca, moment)
        except (VerificationError, FactoryCertificateUntrusted):
            continue
    return []


def _refuse_unfit_for_client_authentication(certificate: x509.Certificate) -> None:
    # RFC 5280 4.2.1.3 and 4.2.1.12: a certificate that states its purposes is used for those only.
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise FactoryCertificateUntrusted("A CA certificate cannot be a device's factory certificate.")
    usage = _extension(certificate, x509.KeyUsage)
    if usage is not None and not (usage.digital_signature or usage.key_agreement):
        raise FactoryCertificateUntrusted(
            "The factory certificate's keyUsage allows neither digitalSignature nor keyAgreement."
        )
    purposes = _extension(certificate, x509.ExtendedKeyUsage)
    if purposes is not None and not {
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    } & set(purposes):
        raise FactoryCertificateUntrusted("The factory certificate's extendedKeyUsage excludes clientAuth.")


def hardware_id_of(certificate: x509.Certificate) -> str:
    """The subject's serialNumber attribute (IEEE 802.1AR puts the device serial there), or else
    its CN; it must pass the one-line rule every hardware id passes."""
    for oid, label in ((NameOID.SERIAL_NUMBER, "serialNumber"), (NameOID.COMMON_NAME, "CN")):
        attributes = certificate.subject.get_attributes_for_oid(oid)
        if attributes:
            value = attributes[0].value
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            problem = text_rules.one_line_problem(text)
            if problem is not None:
                raise FactoryCertificateNoHardwareId(
                    f"The factory certificate's {label} cannot be a hardware id "
                    f"(one line of at most {text_rules.MAX_LENGTH} characters)."
                )
            return text
    raise FactoryCertificateNoHardwareId(
        "The factory certificate's subject has neither a serialNumber nor a CN to take the hardware id from."
    )


def _valid_at(certificate: x509.Certificate, now: dt.datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _extension(certificate: x509.Certificate, kind: type[Extension]) -> Extension | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
