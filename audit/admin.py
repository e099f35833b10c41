from __future__ import annotations

from auditlog.admin import LogEntryAdmin
from auditlog.models import LogEntry
from django.contrib import admin

from audit.models import AuditEvent
from kernel.admin import ReadOnly, ReadOnlyAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only for everyone, superusers included."""

    list_display = ["at", "action", "actor_name", "address", "device_id"]
    list_filter = ["action"]
    search_fields = ["actor_name", "=device_id", "address"]
    date_hierarchy = "at"


# django-auditlog's history: its own admin lets a superuser delete entries; here nobody can.
admin.site.unregister(LogEntry)


@admin.register(LogEntry)
class ChangeHistoryAdmin(ReadOnly, LogEntryAdmin):  # type: ignore[misc]
    pass
