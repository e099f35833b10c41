"""Portal sign-in: password, then a TOTP or backup code; first sign-in enrols an authenticator.

Between the two steps the user is *not* signed in: the session only remembers, for
PENDING_SECONDS, which user gave the right password. `auth.login` runs once the second factor
is verified, so there is never a password-only session, and the session id is rotated at
both steps (against session fixation). Password failures go through django-axes; a wrong
second factor counts as a failed sign-in for the same user name and address, so guessing
codes ends in the same lockout as guessing passwords, on top of django-otp's own throttling.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from typing import Any

import qrcode
import qrcode.image.svg
from axes.handlers.proxy import AxesProxyHandler
from django.contrib import auth, messages
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import devices_for_user, user_has_device, verify_token
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.forms import second_factor_failed
from audit.models import AuditAction
from audit.services import record
from kernel.addresses import client_address
from portal.access import is_verified
from portal.forms import CodeForm, PasswordForm
from portal.middleware import pop_timeout_notice

PENDING = "portal_pending_sign_in"
PENDING_SECONDS = 5 * 60
BACKUP_CODES = 8
TOTP_DIGITS = 6


def _safe_next(request: HttpRequest, candidate: str | None) -> str:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("portal:dashboard")


def _pending_user(request: HttpRequest) -> tuple[User, dict[str, Any]] | None:
    pending = request.session.get(PENDING)
    if not isinstance(pending, dict) or time.time() - float(pending.get("at", 0)) > PENDING_SECONDS:
        request.session.pop(PENDING, None)
        return None
    user = User.objects.filter(pk=int(pending.get("user") or 0), is_active=True).first()
    return (user, pending) if user is not None else None


SecondStepView = Callable[[HttpRequest, User, dict[str, Any]], HttpResponse]


def _second_step(view: SecondStepView) -> Callable[[HttpRequest], HttpResponse]:
    """A page of the sign-in's second step: only for a password checked in the last
    PENDING_SECONDS (others go back to the password page); the code never reaches an error report."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest) -> HttpResponse:
        found = _pending_user(request)
        if found is None:
            messages.info(request, "Please sign in with your password first.")
            return redirect("portal:login")
        return view(request, *found)

    guarded = require_http_methods(["GET", "POST"])(wrapped)
    return sensitive_post_parameters("code")(csrf_protect(never_cache(guarded)))


def _finish_sign_in(request: HttpRequest, user: User, device: Any, pending: dict[str, Any]) -> None:
    request.session.pop(PENDING, None)
    # django-otp marks the session verified with this device when auth.login sees it.
    user.otp_device = device  # type: ignore[attr-defined]
    auth.login(request, user, backend=pending["backend"])


def _second_factor_failed(request: HttpRequest, user: User) -> None:
    second_factor_failed(request, user, form="portal")
    if getattr(request, "axes_locked_out", False):
        request.session.pop(PENDING, None)


def _locked_out(request: HttpRequest, user: User) -> bool:
    credentials = {"username": user.get_username()}
    if AxesProxyHandler.is_allowed(request, credentials):
        return False
    # AxesMiddleware turns this request's answer into the lockout page.
    request.axes_locked_out = True  # type: ignore[attr-defined]
    request.axes_credentials = credentials  # type: ignore[attr-defined]
    request.session.pop(PENDING, None)
    return True


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def login(request: HttpRequest) -> HttpResponse:
    """Step one: user name and password."""
    next_url = _safe_next(request, request.POST.get("next") or request.GET.get("next"))
    if is_verified(request.user):
        return HttpResponseRedirect(next_url)
    pop_timeout_notice(request)
    form = PasswordForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = auth.authenticate(
            request, username=form.cleaned_data["username"], password=form.cleaned_data["password"]
        )
        if user is None:
            form.add_error(None, "The user name or password is not right.")
        else:
            request.session.cycle_key()
            request.session[PENDING] = {
                "user": user.pk,
                "at": time.time(),
                "backend": user.backend,
                "next": next_url,
            }
            step = "portal:login-verify" if user_has_device(user) else "portal:enrol"
            return redirect(step)
    return render(request, "portal/login.html", {"form": form, "next": next_url})


@_second_step
def login_verify(request: HttpRequest, user: User, pending: dict[str, Any]) -> HttpResponse:
    """Step two: a TOTP code (each accepted once: django-otp keeps the last time step) or a backup code."""
    if not user_has_device(user):
        return redirect("portal:enrol")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if _locked_out(request, user):
            return render(request, "portal/login_verify.html", {"form": form}, status=403)
        device = _verify_code(user, form.cleaned_data["code"], form)
        if device is not None:
            _finish_sign_in(request, user, device, pending)
            return HttpResponseRedirect(pending.get("next") or reverse("portal:dashboard"))
        _second_factor_failed(request, user)
        if request.session.get(PENDING) is None:
            return render(request, "portal/login_verify.html", {"form": form}, status=403)
    return render(request, "portal/login_verify.html", {"form": form, "user_name": user.get_username()})


def _verify_code(user: User, code: str, form: CodeForm) -> Any:
    """The device that accepts `code`: a 6-digit code goes to the authenticator, anything else
    to the backup codes, so a wrong code counts against one device only."""
    totp = code.isdigit() and len(code) == TOTP_DIGITS
    candidates = [
        device
        for device in devices_for_user(user)
        if isinstance(device, TOTPDevice if totp else StaticDevice)
    ]
    for device in candidates:
        allowed, detail = device.verify_is_allowed()
        if not allowed:
            until = (detail or {}).get("locked_until")
            wait = f" Try again after {until:%H:%M:%S} UTC." if until else ""
            form.add_error("code", f"Too many wrong codes in a row.{wait}")
            return None
        verified = verify_token(user, device.persistent_id, code)
        if verified is not None:
            return verified
    form.add_error("code", "That code is not valid (each code works once).")
    return None


def _qr_svg(data: str) -> str:
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    svg = image.to_string(encoding="unicode")
    return str(svg)


@_second_step
def enrol(request: HttpRequest, user: User, pending: dict[str, Any]) -> HttpResponse:
    """First sign-in: scan a QR code, confirm one code, receive the backup codes once."""
    if user_has_device(user):
        # Enrolment is only for accounts without a second factor: never a way around one.
        return redirect("portal:login-verify")
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    form = CodeForm(request.POST or None)
    form.fields["code"].help_text = "The 6-digit code your authenticator app shows now."
    if request.method == "POST" and form.is_valid():
        if _locked_out(request, user):
            return render(request, "portal/enrol.html", {"form": form}, status=403)
        if device.verify_token(form.cleaned_data["code"]):
            codes = _confirm_enrolment(user, device)
            record(AuditAction.OTP_ENROLLED, actor=user, address=client_address(request))
            _finish_sign_in(request, user, device, pending)
            response = render(
                request,
                "portal/backup_codes.html",
                {"codes": codes, "next": pending.get("next") or reverse("portal:dashboard")},
            )
            response["Cache-Control"] = "no-store"
            return response
        form.add_error("code", "That code is not right: check the time on your phone and try the next code.")
        _second_factor_failed(request, user)
        if request.session.get(PENDING) is None:
            return render(request, "portal/enrol.html", {"form": form}, status=403)
    context = {
        "form": form,
        "qr_svg": _qr_svg(device.config_url),
        "secret": base64.b32encode(device.bin_key).decode(),
        "user_name": user.get_username(),
    }
    response = render(request, "portal/enrol.html", context)
    response["Cache-Control"] = "no-store"
    return response


def _confirm_enrolment(user: User, device: TOTPDevice) -> list[str]:
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        StaticDevice.objects.filter(user=user).delete()
        backup = StaticDevice.objects.create(user=user, name="backup", confirmed=True)
        codes = [StaticToken.random_token() for _ in range(BACKUP_CODES)]
        StaticToken.objects.bulk_create(StaticToken(device=backup, token=code) for code in codes)
    return codes


@require_POST
@csrf_protect
def logout(request: HttpRequest) -> HttpResponse:
    auth.logout(request)
    messages.info(request, "You are signed out.")
    return redirect("portal:login")
