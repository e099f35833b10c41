"""Expiry warnings: device certificates and the CA itself, e-mailed to the operators once per
threshold (EXPIRY_WARNING_DAYS), and listed on the portal's front page."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from devices.models import Device
from devices.renewal import renewal_due_devices
from pki.keystore import get_ca
from pki.models import Certificate, CertificatePurpose, ExpiryAlert


@dataclass(frozen=True)
class ExpiryReport:
    certificates: list[Certificate]
    ca_expires: dt.datetime | None
    #: Active devices inside their renewal window that have not renewed: named in every alert.
    renewal_due: list[Device] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.certificates and self.ca_expires is None


def expiring_soon(now: dt.datetime | None = None) -> ExpiryReport:
    """What expires within EXPIRY_WARNING_DAYS (alerted or not): for the front page."""
    now = now or timezone.now()
    days = settings.EXPIRY_WARNING_DAYS
    certificates = list(
        Certificate.objects.expiring(days, now)
        .filter(purpose=CertificatePurpose.DEVICE)
        .order_by("not_after")
    )
    ca_not_after = get_ca().certificate.not_valid_after_utc
    due = list(Device.objects.filter(pk__in=renewal_due_devices(now)).order_by("name"))
    return ExpiryReport(
        certificates, ca_not_after if ca_not_after - now <= dt.timedelta(days=days) else None, due
    )


def _first_time(subject_key: str, not_after: dt.datetime) -> bool:
    try:
        with transaction.atomic():
            ExpiryAlert.objects.create(
                subject_key=subject_key, threshold_days=settings.EXPIRY_WARNING_DAYS, not_after=not_after
            )
    except IntegrityError:
        return False
    return True


def send_expiry_alerts(now: dt.datetime | None = None) -> int:
    """E-mail the operators about what newly crossed the threshold; returns how many items."""
    report = expiring_soon(now)
    fresh = [
        certificate
        for certificate in report.certificates
        if _first_time(certificate.serial, certificate.not_after)
    ]
    ca_fresh = report.ca_expires is not None and _first_time("ca", report.ca_expires)
    if not fresh and not ca_fresh:
        return 0
    lines = []
    if ca_fresh and report.ca_expires is not None:
        lines.append(
            f"The certificate authority itself expires on {report.ca_expires:%Y-%m-%d}: plan its rollover."
        )
    lines += [
        f"- {item.common_name} (serial {item.serial}) expires {item.not_after:%Y-%m-%d %H:%M} UTC"
        for item in fresh
    ]
    if report.renewal_due:
        lines.append(
            "\nInside their renewal window and not renewed yet (check they can reach the portal's EST):"
        )
        lines += [f"- {device.name} ({device.id})" for device in report.renewal_due]
    recipients = list(
        User.objects.filter(groups__name="Operators", is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    if recipients:
        subject = (
            f"[IoT onboarding] {len(fresh) + int(ca_fresh)} certificate(s) expire within "
            f"{settings.EXPIRY_WARNING_DAYS} days"
        )
        body = "\n".join(lines) + "\n\nRe-issue devices with `onboard reissue ID` or in the portal.\n"
        try:
            send_mail(subject=subject, message=body, from_email=None, recipient_list=recipients)
        except OSError:  # smtplib's errors, a refused connection, a server silent past EMAIL_TIMEOUT
            # Not sent, so not marked as sent: the next run warns again instead of never.
            marked = [(item.serial, item.not_after) for item in fresh]
            if ca_fresh and report.ca_expires is not None:
                marked.append(("ca", report.ca_expires))
            for subject_key, not_after in marked:
                ExpiryAlert.objects.filter(
                    subject_key=subject_key, threshold_days=settings.EXPIRY_WARNING_DAYS, not_after=not_after
                ).delete()
            raise
    return len(fresh) + int(ca_fresh)
