"""Model-change history (django-auditlog) for what people change: devices, rules, certificates,
links, users and groups.

The explicit audit trail (`audit.AuditEvent`) says *what happened* (issued, revoked,
downloaded, signed in); this history says *which fields changed*, for the admin's edits too.
"""

from __future__ import annotations

from auditlog.registry import auditlog
from django.contrib.auth.models import Group, User

from broker.models import AclRule
from devices.models import Device, DownloadLink
from pki.models import Certificate


def register_models() -> None:
    if auditlog.contains(Device):
        return
    auditlog.register(Device)
    auditlog.register(AclRule)
    # The PEM is public but long, and never changes after issuance: status changes are what matter.
    auditlog.register(Certificate, exclude_fields=["pem"])
    # Digests of one-time tokens are no one's business in a history view.
    auditlog.register(DownloadLink, exclude_fields=["token_digest", "bundle_sha256"])
    # Every sign-in writes last_login: that is the audit trail's job, not a change of the account.
    auditlog.register(User, exclude_fields=["password", "last_login"], m2m_fields={"groups"})
    auditlog.register(Group, m2m_fields={"permissions"})
