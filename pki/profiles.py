"""Pure certificate and CRL construction: plain values in, `cryptography` objects out.

Nothing here touches the database, the file system or settings, so every profile rule is
unit-tested without Django. `pki.issuance` and `pki.crl` supply the CA, serials and dates.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from onboard_cli import vocabulary
from pki.errors import (
    CSRKeyNotAllowed,
    CSRRSAExponentNotAllowed,
    InvalidRevocationReason,
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# The only RSA public exponent accepted (and the one the CA generates): FIPS 186-5 A.1.1
# allows more, but small ones such as 3 are what low-exponent signature forgeries need.
RSA_PUBLIC_EXPONENT = 65537
# Certificates start slightly in the past so a device whose clock lags a little accepts them.
BACKDATE = dt.timedelta(minutes=5)


class KeyType(enum.StrEnum):
    """Key types the CA generates, and the only ones it accepts in a CSR."""

    # The names are the API's, shared with the `onboard` client (onboard_cli.vocabulary).
    RSA2048 = vocabulary.RSA2048
    RSA3072 = vocabulary.RSA3072
    EC_P256 = vocabulary.EC_P256

    def generate(self) -> PrivateKey:
        if self is KeyType.EC_P256:
            return ec.generate_private_key(ec.SECP256R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=self.rsa_bits)

    @property
    def rsa_bits(self) -> int:
        return {KeyType.RSA2048: 2048, KeyType.RSA3072: 3072}[self]

    @classmethod
    def of(cls, key: object) -> KeyType:
        """The key type of a key, or CSRKeyNotAllowed when it is not on the allow-list."""
        if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
            exponent = (key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key).public_numbers().e
            if exponent != RSA_PUBLIC_EXPONENT:
                raise CSRRSAExponentNotAllowed(
                    f"RSA keys with public exponent {exponent} are not accepted; "
                    f"use e = {RSA_PUBLIC_EXPONENT} (what every current tool makes by default)."
                )
            if key.key_size == 2048:
                return cls.RSA2048
            if key.key_size == 3072:
                return cls.RSA3072
            raise CSRKeyNotAllowed(
                f"RSA keys of {key.key_size} bits are not accepted; use 2048 or 3072 bits."
            )
        if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
            if isinstance(key.curve, ec.SECP256R1):
                return cls.EC_P256
            raise CSRKeyNotAllowed(f"EC curve {key.curve.name} is not accepted; use P-256 (secp256r1).")
        raise CSRKeyNotAllowed(
            f"{type(key).__name__.removeprefix('_')} keys are not accepted; use RSA 2048/3072 or EC P-256."
        )


class RevocationReason(enum.StrEnum):
    """RFC 5280 5.3.1 reason codes a device certificate may be revoked with.

    certificateHold and removeFromCRL are left out: this CA has no holds and no delta CRLs.
    cACompromise and aACompromise describe authorities, not end entities.
    """

    UNSPECIFIED = vocabulary.UNSPECIFIED
    KEY_COMPROMISE = vocabulary.KEY_COMPROMISE
    AFFILIATION_CHANGED = vocabulary.AFFILIATION_CHANGED
    SUPERSEDED = vocabulary.SUPERSEDED
    CESSATION_OF_OPERATION = vocabulary.CESSATION_OF_OPERATION
    PRIVILEGE_WITHDRAWN = vocabulary.PRIVILEGE_WITHDRAWN

    @classmethod
    def parse(cls, value: str | None) -> RevocationReason:
        if value is None or value == "":
            return cls.UNSPECIFIED
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(reason.value for reason in cls)
            raise InvalidRevocationReason(
                f"'{value}' is not a revocation reason; use one of: {names}."
            ) from None

    @property
    def flag(self) -> x509.ReasonFlags:
        return x509.ReasonFlags(
            {
                RevocationReason.UNSPECIFIED: "unspecified",
                RevocationReason.KEY_COMPROMISE: "keyCompromise",
                RevocationReason.AFFILIATION_CHANGED: "affiliationChanged",
                RevocationReason.SUPERSEDED: "superseded",
                RevocationReason.CESSATION_OF_OPERATION: "cessationOfOperation",
                RevocationReason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
            }[self]
        )


# Every signature this CA makes, whatever its key type.
SIGNATURE_HASH = hashes.SHA256()


def key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """A keyUsage extension (RFC 5280 4.2.1.3) with only the named bits set; the others, which no
    certificate here needs, are always clear."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def build_ca_certificate(
    private_key: PrivateKey, *, common_name: str, not_before: dt.datetime, not_after: dt.datetime, serial: int
) -> x509.Certificate:
    """A self-signed root: basicConstraints CA:TRUE and keyUsage keyCertSign+cRLSign, both critical."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(private_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # RFC 5280 4.2.1.9: CA:TRUE, critical; no pathLen limit is needed for a root
        # that signs only end entities, but 0 states it.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        # RFC 5280 4.2.1.1: AKI may be omitted in self-signed certificates, but stating it
        # lets chain builders match the issuer without trying every key.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return builder.sign(private_key, SIGNATURE_HASH)


@dataclass(frozen=True)
class EndEntityProfile:
    """What varies between the end-entity certificates this CA issues."""

    extended_key_usage: tuple[x509.ObjectIdentifier, ...]
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


DEVICE_PROFILE = EndEntityProfile(extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH,))


@dataclass(frozen=True)
class CertificateRequest:
    """Everything that goes into one end-entity certificate, as plain values."""

    common_name: str
    public_key: PublicKey
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    crl_url: str
    profile: EndEntityProfile = DEVICE_PROFILE


def end_entity_builder(request: CertificateRequest, issuer: x509.Certificate) -> x509.CertificateBuilder:
    """The unsigned certificate: the same builder is signed by the lint key and then the CA key."""
    is_rsa = isinstance(request.public_key, rsa.RSAPublicKey)
    # RFC 5280 4.1.2.5: never valid past the CA that vouches for it.
    not_after = min(request.not_after, issuer.not_valid_after_utc)
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, request.common_name)]))
        .issuer_name(issuer.subject)
        .public_key(request.public_key)
        .serial_number(request.serial)
        .not_valid_before(request.not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # TLS 1.2 RSA key transport needs keyEncipherment; EC keys never encipher.
            key_usage(digital_signature=True, key_encipherment=is_rsa),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(request.profile.extended_key_usage)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(request.public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(request.crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in request.profile.dns_names]
    if request.profile.ip_addresses:
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in request.profile.ip_addresses]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: dt.datetime
    reason: RevocationReason


def build_crl(
    *,
    issuer: x509.Certificate,
    signing_key: PrivateKey,
    revoked: Iterable[RevokedEntry],
    crl_number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> x509.CertificateRevocationList:
    """A complete CRL signed by the CA.

    The builder gets the whole list in one constructor call: `add_revoked_certificate` copies
    the list on every call, which is quadratic in the number of entries (docs/benchmarks.md).
    """
    # One entry builder per reason, its reasonCode extension added once: builders are immutable,
    # so each entry only sets its serial and date (adding the extension per entry costs a good
    # part of a large build). RFC 5280 5.3.1: the reasonCode "unspecified" SHOULD be absent
    # rather than present.
    plain = x509.RevokedCertificateBuilder()
    builders = {
        reason: plain
        if reason is RevocationReason.UNSPECIFIED
        else plain.add_extension(x509.CRLReason(reason.flag), critical=False)
        for reason in RevocationReason
    }
    entries = []
    for entry in revoked:
        # Naive UTC saves cryptography a time-zone conversion per entry.
        revoked_at = entry.revoked_at
        if revoked_at.tzinfo is not None:
            revoked_at = revoked_at.astimezone(dt.UTC).replace(tzinfo=None)
        entries.append(builders[entry.reason].serial_number(entry.serial).revocation_date(revoked_at).build())
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=[
            # RFC 5280 5.2.1 and 5.2.3: AKI and CRL number are required in conforming CRLs.
            x509.Extension(
                x509.AuthorityKeyIdentifier.oid,
                False,
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            ),
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(crl_number)),
        ],
        revoked_certificates=entries,
    )
    return builder.sign(signing_key, SIGNATURE_HASH)


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM; encrypted with the best available algorithm when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def serial_hex(serial: int) -> str:
    """Upper-case hex with an even number of digits: what `openssl x509 -serial` prints."""
    digits = format(serial, "X")
    return digits if len(digits) % 2 == 0 else "0" + digits


def sha256_fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()
