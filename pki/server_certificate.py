"""TLS server certificates of the portal's own services (the MQTT broker, the TLS front): issued by
the CA into a certificate file and a key file, and kept while they still fit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.utils import timezone

from kernel.fs import write_atomically
from pki.issuance import IssuedCertificate, issue_certificate
from pki.keystore import get_ca
from pki.models import CertificatePurpose
from pki.profiles import EndEntityProfile, KeyType

# Re-issue a server certificate when it has less than this left.
SERVER_RENEW_DAYS = 30


def certificate_names(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    """The subjectAltName's dNSName and iPAddress entries, each sorted."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return sorted(names.get_values_for_type(x509.DNSName)), sorted(
        str(address) for address in names.get_values_for_type(x509.IPAddress)
    )


def ensure_server_certificate(
    certificate_path: Path,
    key_path: Path,
    *,
    common_name: str,
    dns_names: Sequence[str],
    addresses: Sequence[str],
    key_type: KeyType,
    purpose: CertificatePurpose,
) -> IssuedCertificate | None:
    """Keep the certificate in `certificate_path` while this CA issued it, it names exactly these
    hosts and has more than SERVER_RENEW_DAYS left (None); otherwise issue a new one and write it
    and its key (0600, unencrypted: the server reads it at start-up), and return it."""
    if certificate_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(certificate_path.read_bytes())
        fresh = current.not_valid_after_utc - timezone.now() > dt.timedelta(days=SERVER_RENEW_DAYS)
        same_ca = current.issuer == get_ca().certificate.subject
        if fresh and same_ca and certificate_names(current) == (sorted(dns_names), sorted(addresses)):
            return None
    profile = EndEntityProfile(
        extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,),
        dns_names=tuple(dns_names),
        ip_addresses=tuple(addresses),
    )
    issued = issue_certificate(common_name, key_type=key_type, profile=profile, purpose=purpose)
    assert issued.private_key is not None
    # The server's own key, no device's; it reads it without a passphrase.
    write_atomically(
        key_path,
        issued.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        mode=0o600,
    )
    write_atomically(certificate_path, issued.record.pem.encode(), mode=0o644)
    return issued
