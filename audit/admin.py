from __future__ import annotations

from django.contrib import admin

from audit.models import AuditEvent
from onboarding.admin import ReadOnlyAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only for everyone, superusers included."""

    list_display = ["at", "action", "actor_name", "address", "device_id"]
    list_filter = ["action"]
    search_fields = ["actor_name", "device_id", "address"]
    date_hierarchy = "at"
