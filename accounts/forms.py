"""The admin's sign-in form, and what a wrong second factor costs, for it and for the portal."""

from __future__ import annotations

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django_otp.admin import OTPAdminAuthenticationForm

from audit.models import AuditAction
from audit.services import record
from kernel.addresses import client_address


def second_factor_failed(request: HttpRequest, user: Any, *, form: str) -> None:
    """A right password with a wrong TOTP or backup code: audited with the client's address
    (by the trusted-proxy rule), and counted by django-axes as a failed sign-in of that user
    from that address, as a wrong password is."""
    record(AuditAction.LOGIN_OTP_FAILED, actor=user, address=client_address(request), form=form)
    AxesProxyHandler.user_login_failed(
        sender=__name__, credentials={"username": user.get_username()}, request=request
    )


class AdminLoginForm(OTPAdminAuthenticationForm):  # type: ignore[misc]  # django-otp is untyped
    """django-otp's admin form; it has the request, which django-otp's own
    `otp_verification_failed` signal does not carry."""

    #: It records its wrong second factors itself, with the address (audit.signals skips them).
    audits_its_own_otp_failures = True

    def clean_otp(self, user: Any) -> None:
        try:
            super().clean_otp(user)
        except ValidationError as error:
            if error.code == "invalid_token" and self.request is not None:
                second_factor_failed(self.request, user, form="admin")
            raise
