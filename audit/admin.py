from __future__ import annotations

from typing import Any

from auditlog.admin import LogEntryAdmin
from auditlog.models import LogEntry
from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditEvent
from onboarding.admin import ReadOnlyAdmin


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
class ChangeHistoryAdmin(LogEntryAdmin):  # type: ignore[misc]
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
