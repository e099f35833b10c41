"""Read-only history in the admin: devices, download links and every download attempt."""

from __future__ import annotations

from django.contrib import admin

from devices.models import Device, DownloadAttempt, DownloadLink
from onboarding.admin import ReadOnlyAdmin


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdmin):
    list_display = ["name", "id", "hardware_id", "status", "created_by", "created_at", "updated_at"]
    list_filter = ["status"]
    search_fields = ["name", "id", "hardware_id", "certificates__serial"]


@admin.register(DownloadLink)
class DownloadLinkAdmin(ReadOnlyAdmin):
    list_display = ["device", "created_by", "created_at", "expires_at", "used_at", "withdrawn_at"]
    exclude = ["token_digest", "bundle_sha256"]


@admin.register(DownloadAttempt)
class DownloadAttemptAdmin(ReadOnlyAdmin):
    list_display = ["at", "outcome", "device", "address", "user_agent"]
    list_filter = ["outcome"]
    date_hierarchy = "at"
