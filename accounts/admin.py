"""The admin site's gate (second factor and a browser role) and the API tokens in the admin:
every token listed with its owner and dates, never its secret nor its digest, and revocable."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_otp.admin import OTPAdminSite

from accounts import roles
from accounts.models import ApiToken
from accounts.services import revoke_api_token
from kernel.addresses import client_address
from kernel.admin import ReadOnlyAdmin

VIEW_TOKENS = "accounts.view_apitoken"
REVOKE_TOKENS = "accounts.revoke_apitoken"


class StaffAdminSite(OTPAdminSite):  # type: ignore[misc]  # django-otp is untyped
    """django-otp's site (OTP-verified staff only), open only to the roles that work in a
    browser, as the portal is: an integrator with is_staff is still API-only."""

    def has_permission(self, request: HttpRequest) -> bool:
        return bool(super().has_permission(request)) and roles.may_use_browser(request.user)


class TokenStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("expired", "expired"), ("revoked", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
        now = timezone.now()
        unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        if self.value() == "active":
            return queryset.filter(unexpired, revoked_at__isnull=True)
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now, revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Tokens are made by `create_api_token` (which shows the secret once) and never edited or
    deleted here: revoking keeps the row, so the list still says who had which token."""

    list_display = [
        "id",
        "prefix",
        "name",
        "user",
        "state",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
    ]
    # The digest is the key to the table, not a secret to show: left out like the token itself.
    fields = readonly_fields = (
        "id",
        "prefix",
        "name",
        "user",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
    )
    list_filter = [TokenStateFilter]
    search_fields = ["user__username", "name", "prefix"]
    list_select_related = ["user", "revoked_by"]
    actions = ["revoke_selected"]

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        if token.is_revoked:
            return "revoked"
        return "expired" if token.is_expired else "active"

    def has_module_permission(self, request: HttpRequest) -> bool:
        return roles.may_in_browser(request.user, VIEW_TOKENS)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return roles.may_in_browser(request.user, VIEW_TOKENS)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return roles.may_in_browser(request.user, REVOKE_TOKENS)

    @admin.action(permissions=["revoke"], description="Revoke selected API tokens")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        address = client_address(request)
        revoked = [
            token
            for token in queryset.select_related("user")
            if revoke_api_token(token, actor=request.user, address=address)
        ]
        skipped = queryset.count() - len(revoked)
        note = f" ({skipped} already revoked)" if skipped else ""
        self.message_user(request, f"{len(revoked)} API token(s) revoked{note}.", messages.SUCCESS)
