from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from broker.models import AclRule, BrokerSync, PendingChange
from broker.sync import queue_changes
from kernel.admin import ReadOnlyAdmin


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
        _changed({obj.device_id, form.initial.get("device")} - {None})

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        _changed({obj.device_id})

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AclRule]) -> None:
        devices = set(queryset.values_list("device_id", flat=True))
        super().delete_queryset(request, queryset)
        _changed(devices)


def _changed(devices: set[Any]) -> None:
    """Record the devices' changes with the rule (the admin's transaction), then, once it has
    committed, push them to the broker: a sync must not read the database before the commit."""
    from devices.services import tell_broker  # devices.services imports the broker app

    queue_changes(devices)
    transaction.on_commit(partial(tell_broker, ()))


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


@admin.register(PendingChange)
class PendingChangeAdmin(ReadOnlyAdmin):
    """Devices whose broker rights changed and that no successful sync has covered yet."""

    list_display = ["device_id", "queued_at"]
    search_fields = ["device_id"]
