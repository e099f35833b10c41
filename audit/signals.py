"""Sign-ins, successful or not, and sign-outs go into the audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest
from django_otp.forms import otp_verification_failed

from audit.models import AuditAction
from audit.services import record
from kernel.addresses import client_address


def _address(request: HttpRequest | None) -> str | None:
    return client_address(request) if request is not None else None


@receiver(user_logged_in)
def on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    record(AuditAction.LOGIN_SUCCEEDED, actor=user, address=_address(request))


@receiver(user_logged_out)
def on_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        record(AuditAction.LOGGED_OUT, actor=user, address=_address(request))


@receiver(user_login_failed)
def on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # The attempted user name only; never the password.
    record(AuditAction.LOGIN_FAILED, address=_address(request), username=credentials.get("username", ""))


@receiver(otp_verification_failed)
def on_otp_failed(sender: Any, user: Any, **kwargs: Any) -> None:
    """A wrong second factor on a django-otp form that does not audit itself (django-otp sends
    no request, so no address). Forms that record their own, with the address (the admin's
    AdminLoginForm, the portal's sign-in), say so with `audits_its_own_otp_failures = True`."""
    if getattr(sender, "audits_its_own_otp_failures", False):
        return
    record(AuditAction.LOGIN_OTP_FAILED, actor=user, form=getattr(sender, "__name__", "django-otp"))
