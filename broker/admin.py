from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from broker.models import AclRule, BrokerSync
from broker.services import sync_broker
from onboarding.admin import ReadOnlyAdmin


@admin.register(AclRule)
class AclRuleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Editable, validated by the model (topic filter syntax, other devices' trees), then synced."""

    list_display = ["device", "access", "topic_filter", "shared", "created_at"]
    list_filter = ["access", "shared"]
    search_fields = ["topic_filter", "device__name", "device__id"]
    raw_id_fields = ["device"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # A rule moved to another device changes the rights of both.
        devices = {obj.device_id, form.initial.get("device")} - {None}
        sync_broker(devices=devices)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        sync_broker(devices=[obj.device_id])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AclRule]) -> None:
        devices = set(queryset.values_list("device_id", flat=True))
        super().delete_queryset(request, queryset)
        sync_broker(devices=devices)


@admin.register(BrokerSync)
class BrokerSyncAdmin(ReadOnlyAdmin):
    list_display = [
        "synced_at",
        "backend",
        "changed_devices",
        "crl_number",
        "revoked_devices",
        "extra_rules",
        "reloaded",
    ]
