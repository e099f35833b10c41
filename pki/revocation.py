"""Certificate status changes: revoke (and publish the CRL that lists it), expire."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from kernel.locks import exclusive_lock
from pki.crl import CRL_LOCK, publish_crl_locked
from pki.models import Certificate, CertificateRevocationList, CertificateStatus
from pki.profiles import RevocationReason


def revoke_certificate(
    certificate: Certificate, reason: RevocationReason = RevocationReason.UNSPECIFIED
) -> CertificateRevocationList:
    """Revoke and publish the CRL that lists it, all or nothing.

    The new CRL is written before the transaction commits: if writing fails the revocation is
    rolled back and the caller gets the error, so the database never says "revoked" while the
    CRL served to brokers does not.
    """
    record = revoke_certificates([certificate], reason)
    certificate.refresh_from_db()
    return record


def revoke_certificates(
    certificates: Iterable[Certificate], reason: RevocationReason
) -> CertificateRevocationList:
    """Revoke several certificates and publish one CRL listing them all.

    Callable inside a caller's transaction (a device workflow); the CRL lock is re-entrant.
    """
    with exclusive_lock(CRL_LOCK), transaction.atomic():
        now = timezone.now()
        primary_keys = [certificate.pk for certificate in certificates]
        for locked in Certificate.objects.select_for_update().filter(pk__in=primary_keys).order_by("pk"):
            locked.revoke(reason, when=now)
            locked.save(update_fields=["status", "revoked_at", "revocation_reason"])
        return publish_crl_locked()


def mark_expired_certificates(now: dt.datetime | None = None) -> int:
    """Active certificates past their notAfter become `expired`; returns how many."""
    return Certificate.objects.filter(
        status=CertificateStatus.ACTIVE, not_after__lte=now or timezone.now()
    ).update(status=CertificateStatus.EXPIRED)
