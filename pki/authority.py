"""The certificate authority itself: create it once, with its first CRL."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from pki.crl import publish_crl
from pki.errors import PKIError
from pki.keystore import forget_loaded_ca, keystore
from pki.models import CertificateRevocationList
from pki.profiles import BACKDATE, KeyType, build_ca_certificate

DEFAULT_CA_COMMON_NAME = "IoT Device Onboarding Root CA"
DEFAULT_CA_VALIDITY_DAYS = 3650
# A ten-year root outlives RSA-2048's recommended horizon (NIST SP 800-57: 2030), so the root
# defaults to RSA-3072; device keys stay RSA-2048 by default, as the original design asks.
DEFAULT_CA_KEY_TYPE = KeyType.RSA3072


@dataclass(frozen=True)
class CAStatus:
    certificate: x509.Certificate
    created: bool


def initialize_ca(
    *,
    common_name: str = DEFAULT_CA_COMMON_NAME,
    validity_days: int = DEFAULT_CA_VALIDITY_DAYS,
    key_type: KeyType = DEFAULT_CA_KEY_TYPE,
) -> CAStatus:
    """Create the root CA and its first CRL, once. An existing CA is left exactly as it is."""
    store = keystore()
    if store.exists():
        return CAStatus(certificate=store.load().certificate, created=False)
    try:
        # The first CRL goes into the database: find out now, before any key is made.
        CertificateRevocationList.objects.exists()
    except DatabaseError:
        raise PKIError("The database is not set up yet: run `python manage.py migrate` first.") from None
    if validity_days < 1:
        raise PKIError("The CA's validity must be at least one day.")
    private_key = key_type.generate()
    now = timezone.now()
    certificate = build_ca_certificate(
        private_key,
        common_name=common_name,
        not_before=now - BACKDATE,
        not_after=now + dt.timedelta(days=validity_days),
        serial=x509.random_serial_number(),
    )
    store.save(certificate, private_key)
    (Path(settings.CA_ROOT_PATH) / "devices").mkdir(mode=0o700, exist_ok=True)
    forget_loaded_ca()
    publish_crl()
    return CAStatus(certificate=certificate, created=True)
