"""Devices in the admin: list, filters, search, certificate history, and the workflows as actions.

Nothing here edits a device by hand: revoke, re-issue and new links call the device workflows,
each allowed by the role's permission (accounts.roles); links and download records are
read-only history.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts import roles
from broker.dispatch import revocation_effect
from devices.lifecycle import get_device, issue_new_bundle, reissue_device, revoke_device
from devices.models import Device, DeviceStatus, DownloadAttempt, DownloadLink
from devices.renewal import request_renewal
from kernel.addresses import client_address
from kernel.admin import ReadOnly, ReadOnlyAdmin
from kernel.errors import ServiceError
from pki.models import Certificate, CertificateStatus
from pki.profiles import KeyType, RevocationReason

EXPIRY_FILTER_DAYS = 30


class ExpiringFilter(admin.SimpleListFilter):
    title = "certificate expiry"
    parameter_name = "expiring"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("30", f"within {EXPIRY_FILTER_DAYS} days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Device]) -> QuerySet[Device]:
        if self.value() == "30":
            return queryset.expiring(EXPIRY_FILTER_DAYS)  # type: ignore[attr-defined, no-any-return]
        return queryset


class KeyTypeFilter(admin.SimpleListFilter):
    title = "key type"
    parameter_name = "key_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(kind.value, kind.value) for kind in KeyType]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Device]) -> QuerySet[Device]:
        if self.value() in {kind.value for kind in KeyType}:
            return queryset.filter(
                certificates__key_type=self.value(), certificates__status=CertificateStatus.ACTIVE
            ).distinct()
        return queryset


class CertificateInline(ReadOnly, admin.TabularInline):  # type: ignore[type-arg]
    """The device's certificates, newest first: history, never edited."""

    model = Certificate
    fields = readonly_fields = (
        "serial",
        "key_type",
        "from_csr",
        "not_before",
        "not_after",
        "status",
        "revoked_at",
        "revocation_reason",
        "superseded_at",
    )
    ordering = ["-created_at"]
    extra = 0
    can_delete = False
    show_change_link = True


class RevokeSelectedForm(forms.Form):
    reason = forms.ChoiceField(choices=[(reason.value, reason.value) for reason in RevocationReason])


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdmin):
    list_display = ["name", "id", "hardware_id", "status", "certificate_expiry", "updated_at"]
    list_filter = ["status", ExpiringFilter, KeyTypeFilter]
    search_fields = ["name", "=id", "hardware_id", "=certificates__serial"]
    inlines = [CertificateInline]
    actions = ["revoke_selected", "reissue_selected", "new_link_selected", "request_renewal_selected"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Device]:
        return super().get_queryset(request).with_certificates()  # type: ignore[attr-defined, no-any-return]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Device], search_term: str
    ) -> tuple[QuerySet[Device], bool]:
        # A serial is shown with colons by some tools and in upper case by openssl.
        return super().get_search_results(request, queryset, search_term.replace(":", "").strip())

    @admin.display(description="certificate ends")
    def certificate_expiry(self, device: Device) -> dt.datetime | None:
        current = device.current_certificate
        return current.not_after if current else None

    # Permissions of the actions: the role's, decided where the portal's are (accounts.roles).
    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return roles.may_in_browser(request.user, roles.REVOKE)

    def has_reissue_permission(self, request: HttpRequest) -> bool:
        return roles.may_in_browser(request.user, roles.REISSUE)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return roles.may_in_browser(request.user, roles.VIEW)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return roles.may_use_browser(request.user)

    @admin.action(permissions=["revoke"], description="Revoke selected devices…")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Device]) -> HttpResponse | None:
        devices = [device for device in queryset if device.status != DeviceStatus.REVOKED]
        form = RevokeSelectedForm(request.POST if request.POST.get("confirm") == "yes" else None)
        if form.is_bound and form.is_valid():
            reason = RevocationReason(form.cleaned_data["reason"])
            done = 0
            for device in devices:
                try:
                    revoke_device(device, reason, actor=request.user, address=client_address(request))
                    done += 1
                except ServiceError as error:
                    self.message_user(request, f"{device.name}: {error.message}", messages.ERROR)
            self.message_user(request, f"{done} device(s) revoked ({reason.value}).", messages.SUCCESS)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke devices",
            "devices": devices,
            "skipped": queryset.count() - len(devices),
            "form": form,
            "broker_effect": revocation_effect(),
            "opts": self.model._meta,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "selected": [str(device.pk) for device in queryset],
        }
        return TemplateResponse(request, "admin/devices/device/revoke_selected.html", context)

    @admin.action(permissions=["reissue"], description="Re-issue certificates of selected devices")
    def reissue_selected(self, request: HttpRequest, queryset: QuerySet[Device]) -> HttpResponse | None:
        return self._hand_over(request, queryset, "Certificates re-issued", rotate=True)

    @admin.action(permissions=["reissue"], description="New download link for selected devices")
    def new_link_selected(self, request: HttpRequest, queryset: QuerySet[Device]) -> HttpResponse | None:
        return self._hand_over(request, queryset, "New download links", rotate=False)

    @admin.action(permissions=["reissue"], description="Let selected devices renew now (EST)")
    def request_renewal_selected(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        done = 0
        for device in queryset:
            try:
                request_renewal(device, actor=request.user, address=client_address(request))
                done += 1
            except ServiceError as error:
                self.message_user(request, f"{device.name}: {error.message}", messages.ERROR)
        self.message_user(request, f"{done} device(s) may renew now.", messages.SUCCESS)

    def _hand_over(
        self, request: HttpRequest, queryset: QuerySet[Device], title: str, *, rotate: bool
    ) -> HttpResponse | None:
        """Run the workflow for each device and show the one-time secrets once (portal reveal page)."""
        from portal import reveal
        from portal.views.devices import credential_for

        handed: list[reveal.Credential] = []
        for device in queryset:
            try:
                if rotate:
                    registration = reissue_device(device, actor=request.user, address=client_address(request))
                    handed.append(credential_for(registration.device, registration.bundle))
                else:
                    bundle = issue_new_bundle(device, actor=request.user, address=client_address(request))
                    handed.append(credential_for(get_device(device.id), bundle))
            except ServiceError as error:
                self.message_user(request, f"{device.name}: {error.message}", messages.ERROR)
        if not handed:
            return None
        return reveal.redirect_to_reveal(request, handed, title)


@admin.register(DownloadLink)
class DownloadLinkAdmin(ReadOnlyAdmin):
    list_display = ["device", "created_by", "created_at", "expires_at", "used_at", "withdrawn_at"]
    exclude = ["token_digest", "bundle_sha256"]
    list_filter = [("used_at", admin.EmptyFieldListFilter), ("withdrawn_at", admin.EmptyFieldListFilter)]
    search_fields = ["=device__id", "device__name"]


@admin.register(DownloadAttempt)
class DownloadAttemptAdmin(ReadOnlyAdmin):
    list_display = ["at", "outcome", "device", "address", "user_agent"]
    list_filter = ["outcome"]
    date_hierarchy = "at"
