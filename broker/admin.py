from __future__ import annotations

from typing import Any

from django.contrib import admin
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
        sync_broker()

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        sync_broker()


@admin.register(BrokerSync)
class BrokerSyncAdmin(ReadOnlyAdmin):
    list_display = ["synced_at", "backend", "crl_number", "revoked_devices", "extra_rules", "reloaded"]
