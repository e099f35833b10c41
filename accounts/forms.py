"""The admin's sign-in form: django-otp's, with a wrong second factor audited with its address."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django_otp.admin import OTPAdminAuthenticationForm

from audit.models import AuditAction
from audit.services import record
from onboarding.addresses import client_address


class AdminLoginForm(OTPAdminAuthenticationForm):  # type: ignore[misc]  # django-otp is untyped
    """A right password with a wrong TOTP or backup code is recorded here, where the request
    (and so the client's address, by the trusted-proxy rule) is known; django-otp's own
    `otp_verification_failed` signal carries no request."""

    def clean_otp(self, user: Any) -> None:
        try:
            super().clean_otp(user)
        except ValidationError as error:
            if error.code == "invalid_token":
                address = client_address(self.request) if self.request is not None else None
                record(AuditAction.LOGIN_OTP_FAILED, actor=user, address=address, form="admin")
            raise
