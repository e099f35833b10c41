"""Dashboard, device list and detail, and the device actions (register, revoke, re-issue, link).

Views only translate between HTTP and the device workflows; a ServiceError's message is shown
in the form.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from auditlog.models import LogEntry
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import roles
from audit.models import AuditEvent
from broker.dispatch import revocation_effect
from broker.models import AclRule
from broker.rules import default_rules
from devices.delivery import IssuedBundle
from devices.errors import DeviceNotFound, HardwareIdConflict
from devices.lifecycle import get_device, issue_new_bundle, reissue_device, revoke_device
from devices.models import Device, DeviceStatus
from devices.provisioning import retry_provisioning
from devices.registration import RegistrationRequest, register_device
from devices.renewal import renewal_opens_at
from devices.renewal import request_renewal as allow_renewal
from enrollment.enroll import AwaitingEnrollment, register_for_enrollment
from kernel.addresses import client_address
from kernel.errors import ServiceError
from onboard_cli import vocabulary
from pki.profiles import KeyType, RevocationReason
from portal import dashboard as dashboard_data
from portal import reveal, submissions
from portal.access import can, portal_view
from portal.forms import RegisterForm, ReissueForm, RevokeForm

PAGE_SIZE = 25
PENDING_NOTE = (
    "The device is being provisioned: its certificate is being signed. The link starts serving the "
    "bundle as soon as that is done; the password below is already final."
)


def _device_or_404(device_id: uuid.UUID) -> Device:
    try:
        return get_device(device_id)
    except DeviceNotFound:
        raise Http404("No such device.") from None


def credential_for(device: Device, bundle: IssuedBundle) -> reveal.Credential:
    return reveal.Credential(
        device_id=str(device.id),
        device_name=device.name,
        device_status=device.status,
        download_url=bundle.url,
        password=bundle.password,
        expires_at=f"{bundle.link.expires_at:%Y-%m-%d %H:%M} UTC",
        note=PENDING_NOTE if device.status == DeviceStatus.PENDING else "",
    )


ENROLLMENT_NOTE = (
    "The device enrols itself over EST (docs/est.md): HTTP Basic with its device id and this code "
    "at /.well-known/est/simpleenroll. The code works once."
)


def enrollment_credential_for(awaiting: AwaitingEnrollment) -> reveal.Credential:
    return reveal.Credential(
        device_id=str(awaiting.device.id),
        device_name=awaiting.device.name,
        device_status=awaiting.device.status,
        download_url="",
        password="",
        expires_at=f"{awaiting.enrollment_code_expires_at:%Y-%m-%d %H:%M} UTC",
        note=ENROLLMENT_NOTE,
        enrollment_code=awaiting.enrollment_code,
    )


def _sent_again(request: HttpRequest, then: str, **kwargs: Any) -> HttpResponse | None:
    """A form that shows credentials, sent a second time (back button, double click): the first
    sending showed them; this one goes to `then` with a word instead of issuing more."""
    if submissions.consume(request, request.POST.get("submission", "")):
        return None
    messages.warning(request, "This form was already sent once; its credentials were shown then.")
    response: HttpResponse = redirect(then, **kwargs)
    return response


def _confirm_and_reveal(
    request: HttpRequest,
    device: Device,
    make: Callable[[], reveal.Credential],
    title: str,
    template: str,
    **context: Any,
) -> HttpResponse:
    """A confirmation page whose POST makes a credential (`make`) and shows it once: sent again,
    back to the device; refused by the service, the page again with the sentence."""
    error = ""
    if request.method == "POST":
        if (again := _sent_again(request, "portal:device-detail", device_id=device.id)) is not None:
            return again
        try:
            credential = make()
        except ServiceError as failure:
            error = failure.message
        else:
            return reveal.redirect_to_reveal(request, [credential], title)
    context = {**context, "device": device, "submission": submissions.issue(request), "error": error}
    return render(request, template, context)


@require_GET
@portal_view()
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/dashboard.html", {"board": dashboard_data.build()})


def search_devices(query: str, status: str) -> QuerySet[Device]:
    devices = Device.objects.with_certificates().order_by("-created_at")
    if status in DeviceStatus.values:
        devices = devices.filter(status=status)
    query = query.strip()
    if query:
        match = (
            Q(name__icontains=query)
            | Q(hardware_id__icontains=query)
            | Q(certificates__serial__iexact=query.replace(":", ""))
        )
        with contextlib.suppress(ValueError):  # not a device id: search the other fields only
            match |= Q(id=uuid.UUID(query))
        devices = devices.filter(match).distinct()
    return devices


@require_GET
@portal_view()
def device_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:200]
    status = request.GET.get("status", "")
    page = Paginator(search_devices(query, status), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "portal/device_list.html",
        {"page": page, "q": query, "status": status, "statuses": DeviceStatus.choices},
    )


@require_GET
@portal_view()
def device_detail(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    device = _device_or_404(device_id)
    active = device.status == DeviceStatus.ACTIVE
    current = device.current_certificate
    context: dict[str, Any] = {
        "device": device,
        "certificate": current,
        "renewal_opens_at": renewal_opens_at(current.not_before, current.not_after)
        if active and current is not None
        else None,
        "certificates": list(device.certificates.all()),
        "topics": default_rules(str(device.id)) if active else [],
        "extra_rules": list(AclRule.objects.filter(device=device)),
        "events": list(AuditEvent.objects.filter(device_id=device.id).select_related("actor")[:50]),
        # Changes after registration (the registration itself is in the audit events above).
        "changes": list(
            LogEntry.objects.get_for_object(device)
            .filter(action=LogEntry.Action.UPDATE)
            .select_related("actor")[:20]
        ),
        "links": list(device.download_links.select_related("created_by")[:10]),
        "may_revoke": can(request.user, roles.REVOKE) and device.status != DeviceStatus.REVOKED,
        "may_reissue": can(request.user, roles.REISSUE) and active,
        "may_retry": can(request.user, roles.REGISTER) and device.status == DeviceStatus.FAILED,
    }
    return render(request, "portal/device_detail.html", context)


@require_http_methods(["GET", "POST"])
@portal_view(roles.REGISTER)
def register(request: HttpRequest) -> HttpResponse:
    form = RegisterForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        if (again := _sent_again(request, "portal:device-list")) is not None:
            return again
        data = form.cleaned_data
        wanted = RegistrationRequest(
            name=data["name"],
            hardware_id=data["hardware_id"],
            csr_pem=data["csr_pem"],
            key_type=KeyType(data["key_type"]),
            metadata=data["metadata"],
        )
        try:
            if data["delivery"] == vocabulary.DELIVERY_EST:
                awaiting = register_for_enrollment(
                    wanted, actor=request.user, address=client_address(request)
                )
                credential = enrollment_credential_for(awaiting)
            else:
                registration = register_device(wanted, actor=request.user, address=client_address(request))
                credential = credential_for(registration.device, registration.bundle)
        except HardwareIdConflict as error:
            form.add_error("hardware_id", error.message)  # on the field that has to change
        except ServiceError as error:
            form.add_error(None, error.message)
        else:
            return reveal.redirect_to_reveal(request, [credential], "Device registered")
    return render(request, "portal/register.html", {"form": form, "submission": submissions.issue(request)})


@require_http_methods(["GET", "POST"])
@portal_view(roles.REVOKE)
def revoke(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    device = _device_or_404(device_id)
    if device.status == DeviceStatus.REVOKED:
        messages.info(request, "This device is already revoked.")
        return redirect("portal:device-detail", device_id=device.id)
    form = RevokeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            revoke_device(
                device,
                RevocationReason(form.cleaned_data["reason"]),
                actor=request.user,
                address=client_address(request),
            )
        except ServiceError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, f"{device.name} is revoked; the CRL and the broker are updated.")
            return redirect("portal:device-detail", device_id=device.id)
    return render(
        request, "portal/revoke.html", {"device": device, "form": form, "broker_effect": revocation_effect()}
    )


@require_POST
@portal_view(roles.REISSUE)
def request_renewal(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    """Let the device renew (EST simplereenroll) before its renewal window opens."""
    device = _device_or_404(device_id)
    try:
        allow_renewal(device, actor=request.user, address=client_address(request))
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "The device may renew its certificate now; its next renewal clears this.")
    return redirect("portal:device-detail", device_id=device.id)


def _actionable(request: HttpRequest, device: Device) -> HttpResponse | None:
    if device.status != DeviceStatus.ACTIVE:
        messages.error(request, f"This device is {device.get_status_display().lower()}: nothing to re-issue.")
        return redirect("portal:device-detail", device_id=device.id)
    return None


@require_http_methods(["GET", "POST"])
@portal_view(roles.REISSUE)
def reissue(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    device = _device_or_404(device_id)
    refused = _actionable(request, device)
    if refused is not None:
        return refused
    form = ReissueForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        if (again := _sent_again(request, "portal:device-detail", device_id=device.id)) is not None:
            return again
        key_type = form.cleaned_data["key_type"]
        try:
            registration = reissue_device(
                device,
                key_type=KeyType(key_type) if key_type else None,
                csr_pem=form.cleaned_data["csr_pem"],
                actor=request.user,
                address=client_address(request),
            )
        except ServiceError as error:
            form.add_error(None, error.message)
        else:
            return reveal.redirect_to_reveal(
                request, [credential_for(registration.device, registration.bundle)], "Certificate re-issued"
            )
    context = {
        "device": device,
        "form": form,
        "certificate": device.current_certificate,
        "submission": submissions.issue(request),
    }
    return render(request, "portal/reissue.html", context)


@require_http_methods(["GET", "POST"])
@portal_view(roles.REISSUE)
def new_link(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    device = _device_or_404(device_id)
    refused = _actionable(request, device)
    if refused is not None:
        return refused

    def new_bundle() -> reveal.Credential:
        bundle = issue_new_bundle(device, actor=request.user, address=client_address(request))
        return credential_for(_device_or_404(device.id), bundle)

    return _confirm_and_reveal(
        request,
        device,
        new_bundle,
        "New download link",
        "portal/new_link.html",
        certificate=device.current_certificate,
    )


@require_http_methods(["GET", "POST"])
@portal_view(roles.REGISTER)
def retry(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    """Provision a failed device again: a new password and link, shown once."""
    device = _device_or_404(device_id)
    if device.status != DeviceStatus.FAILED:
        messages.error(request, f"This device is {device.get_status_display().lower()}: nothing to retry.")
        return redirect("portal:device-detail", device_id=device.id)

    def provision_again() -> reveal.Credential:
        registration = retry_provisioning(device, actor=request.user, address=client_address(request))
        return credential_for(registration.device, registration.bundle)

    return _confirm_and_reveal(request, device, provision_again, "Provisioning again", "portal/retry.html")


@require_GET
@portal_view()
def show_credentials(request: HttpRequest, reveal_id: str) -> HttpResponse:
    opened = reveal.take(request, reveal_id)
    if opened is None:
        response = render(request, "portal/reveal_gone.html", status=410)
    else:
        response = render(request, "portal/reveal.html", opened)
    # Never cached, never sent as a referrer: the page holds a password and a one-time link.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    reveal.forget_cookie(response, reveal_id)
    return response
