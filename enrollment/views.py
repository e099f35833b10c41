"""The portal's enrolment group pages: the list (everyone in a portal role), adding a group and
enabling or disabling one (operators). Views only translate between HTTP and
`enrollment.services`; a ServiceError's message is shown in the form or as a message."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import roles
from enrollment import services
from enrollment.forms import EnrollmentGroupForm
from enrollment.models import EnrollmentGroup
from kernel.addresses import client_address
from kernel.errors import ServiceError
from portal.access import can, portal_view


@require_GET
@portal_view(roles.VIEW_ENROLLMENT_GROUPS)
def group_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "portal/enrollment_groups.html",
        {
            "groups": list(EnrollmentGroup.objects.select_related("created_by")),
            "may_add": can(request.user, roles.ADD_ENROLLMENT_GROUPS),
            "may_change": can(request.user, roles.CHANGE_ENROLLMENT_GROUPS),
        },
    )


@require_http_methods(["GET", "POST"])
@portal_view(roles.ADD_ENROLLMENT_GROUPS)
def group_add(request: HttpRequest) -> HttpResponse:
    form = EnrollmentGroupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            group = services.create_enrollment_group(
                name=data["name"],
                ca_certificate=data["ca_certificate"],
                allowed_hardware_ids=data["allowed_hardware_ids"],
                enabled=data["enabled"],
                actor=request.user,
                address=client_address(request),
            )
        except ServiceError as error:
            field = "ca_certificate" if error.code == "invalid_ca_certificate" else None
            form.add_error(field, error.message)
        else:
            messages.success(request, f"Enrolment group {group.name} added.")
            return redirect("enrollment:group-list")
    return render(request, "portal/enrollment_group_add.html", {"form": form})


@require_POST
@portal_view(roles.CHANGE_ENROLLMENT_GROUPS)
def group_enable(request: HttpRequest, group_id: uuid.UUID) -> HttpResponse:
    group = EnrollmentGroup.objects.filter(pk=group_id).first()
    if group is None:
        raise Http404("No such enrolment group.")
    enabled = request.POST.get("enabled") == "true"
    services.update_enrollment_group(
        group, enabled=enabled, actor=request.user, address=client_address(request)
    )
    messages.success(request, f"Enrolment group {group.name} is {'enabled' if enabled else 'disabled'}.")
    return redirect("enrollment:group-list")
