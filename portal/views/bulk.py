"""Bulk registration pages: upload and check, confirm, progress, results once (see portal.bulk)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import roles
from kernel.addresses import client_address
from portal import bulk, sealed
from portal.access import portal_view
from portal.forms import BulkUploadForm
from portal.models import BulkJob, BulkJobStatus

KEY_COOKIE = "bulk_key"
KEY_COOKIE_SECONDS = 24 * 60 * 60
PREVIEW_ROWS = 20


def _own_job(request: HttpRequest, job_id: uuid.UUID) -> BulkJob:
    job = BulkJob.objects.filter(pk=job_id, created_by_id=request.user.pk).first()
    if job is None:
        raise Http404("No such bulk registration.")
    return job


def _job_path(job: BulkJob) -> str:
    return reverse("portal:bulk-job", args=[job.pk])


@require_http_methods(["GET", "POST"])
@portal_view(roles.REGISTER)
def upload(request: HttpRequest) -> HttpResponse:
    form = BulkUploadForm(request.POST or None, request.FILES or None)
    checked = None
    if request.method == "POST" and form.is_valid():
        upload_file = form.cleaned_data["file"]
        checked = bulk.check_csv(upload_file.read())
        if checked.ok:
            job = bulk.create_job(request.user, client_address(request), upload_file.name, checked)  # type: ignore[arg-type]
            return redirect("portal:bulk-job", job_id=job.pk)
    return render(
        request,
        "portal/bulk_upload.html",
        {"form": form, "checked": checked, "max_rows": settings.PORTAL_BULK_MAX_ROWS},
    )


@require_GET
@portal_view(roles.REGISTER)
def job_page(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _own_job(request, job_id)
    context = {
        "job": job,
        "interrupted": bulk.is_interrupted(job),
        "preview": job.rows[:PREVIEW_ROWS],
        "metadata_columns": sorted({key for row in job.rows for key in row["metadata"]}),
        "percent": round(100 * job.done / job.total) if job.total else 100,
    }
    return render(request, "portal/bulk_job.html", context)


@require_POST
@portal_view(roles.REGISTER)
def start(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _own_job(request, job_id)
    if job.status == BulkJobStatus.VALIDATED:
        key = sealed.new_key()
    else:
        try:
            key = sealed.decode_key(request.COOKIES.get(KEY_COOKIE, ""))
        except sealed.Unreadable:
            messages.error(request, "Only the browser session that started this job can continue it.")
            return redirect("portal:bulk-job", job_id=job.pk)
    if not bulk.claim(job):
        messages.info(request, "This job is already running.")
        return redirect("portal:bulk-job", job_id=job.pk)
    response = redirect("portal:bulk-job", job_id=job.pk)
    sealed.give_key(response, KEY_COOKIE, key, max_age=KEY_COOKIE_SECONDS, path=_job_path(job))
    bulk.start(job, key)
    return response


@require_GET
@portal_view(roles.REGISTER)
def progress(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _own_job(request, job_id)
    return JsonResponse(
        {
            "status": job.status,
            "done": job.done,
            "failed": job.failed,
            "total": job.total,
            "interrupted": bulk.is_interrupted(job),
        }
    )


@require_GET
@portal_view(roles.REGISTER)
def results(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _own_job(request, job_id)
    try:
        key = sealed.decode_key(request.COOKIES.get(KEY_COOKIE, ""))
        data = bulk.collect(job, key)
    except (sealed.Unreadable, bulk.ResultsUnavailable) as problem:
        message = (
            str(problem)
            if isinstance(problem, bulk.ResultsUnavailable)
            else "These results can be opened only in the browser session that started the job."
        )
        response = render(request, "portal/bulk_gone.html", {"job": job, "message": message}, status=410)
    else:
        response = HttpResponse(data, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="bulk-results-{job.pk}.csv"'
        response.delete_cookie(KEY_COOKIE, path=_job_path(job), samesite="Strict")
    response["Cache-Control"] = "no-store"
    return response
