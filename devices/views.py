"""GET /download/<token>: the credential bundle, once. Browsers get pages, programs get JSON."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from devices.delivery import download_bundle
from onboarding.addresses import client_address
from onboarding.api import error_body, error_responses
from onboarding.errors import ServiceError

NEXT_STEP = {
    "unknown_link": "Check that the whole link was copied; links are long.",
    "link_used": "Each link works once. Ask an operator for a new bundle (it comes with a new password).",
    "link_expired": "Links work for a limited time. Ask an operator for a new bundle.",
    "link_withdrawn": "A newer bundle replaced this one. Use the newest link you were given.",
    "bundle_missing": "Ask an operator for a new bundle.",
}


def _no_trace(response: HttpResponse) -> HttpResponse:
    # The token is in the URL: keep it out of caches and out of Referer headers.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _wants_html(request: Request) -> bool:
    return "text/html" in request.META.get("HTTP_ACCEPT", "")


def _refusal(request: Request, error: ServiceError) -> HttpResponse:
    if _wants_html(request):
        page = render_to_string(
            "download_refused.html",
            {
                "title": "This link cannot be used",
                "message": error.message,
                "next_step": NEXT_STEP.get(error.code),
            },
        )
        return HttpResponse(page, status=error.status)
    return JsonResponse(error_body(error.code, error.message), status=error.status)


class AnyAccept(DefaultContentNegotiation):
    """The answer is a ZIP, a page or JSON whatever the client accepts: never 406."""

    def select_renderer(self, request: Request, renderers: Any, format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


class DownloadView(APIView):
    # Not HEAD: link checkers and previewers send it, and it must not use up the one download.
    http_method_names = ["get", "options"]
    content_negotiation_class = AnyAccept
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Download a credential bundle (once)",
        description="The AES-256 encrypted ZIP with device.crt, ca.crt, device.json, README.txt and, "
        "for server-generated keys, device.key. Works once, until it expires.",
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="the ZIP"),
            **error_responses(404, 410, 414, 429, 503),
        },
    )
    def get(self, request: Request, token: str) -> HttpResponse:
        try:
            download = download_bundle(
                token,
                address=client_address(request),
                user_agent=request.META.get("HTTP_USER_AGENT", ""),
            )
        except ServiceError as error:
            return _no_trace(_refusal(request, error))
        response = HttpResponse(download.data, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
        return _no_trace(response)
