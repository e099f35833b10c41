"""Enrolment groups and codes in the admin: looked at, not edited by hand.

Groups are made, enabled, disabled and deleted through `enrollment.services` (the API and the
portal), which check the CA certificate and audit each change; codes are digests only.
"""

from __future__ import annotations

from django.contrib import admin

from enrollment.models import EnrollmentCode, EnrollmentGroup
from kernel.admin import ReadOnlyAdmin


@admin.register(EnrollmentGroup)
class EnrollmentGroupAdmin(ReadOnlyAdmin):
    list_display = ["name", "enabled", "ca_subject", "ca_not_after", "created_by", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "ca_subject", "ca_fingerprint"]
    readonly_fields = [
        "id",
        "name",
        "enabled",
        "ca_subject",
        "ca_fingerprint",
        "ca_not_after",
        "ca_certificate",
        "allowed_hardware_ids",
        "created_by",
        "created_at",
        "updated_at",
    ]


@admin.register(EnrollmentCode)
class EnrollmentCodeAdmin(ReadOnlyAdmin):
    list_display = ["device", "created_at", "expires_at", "used_at", "failed_attempts", "locked_until"]
    list_select_related = ["device"]
    search_fields = ["device__name", "device__id"]
    # The digest stays out of sight: it is no use to a reader, and one less thing to leak.
    exclude = ["digest"]
    readonly_fields = [
        "device",
        "created_by",
        "created_at",
        "expires_at",
        "used_at",
        "failed_attempts",
        "locked_until",
    ]
