"""/download/<token>: the credential bundle, once. Browsers get pages, programs get JSON.

A program's GET (curl, the `onboard` CLI: any Accept without text/html) downloads at once. A
browser's GET (Accept: text/html) only shows a page with a button, which POSTs to the same
address to download: chat and mail previewers fetch links with browser-like GETs, and must not
use up the one download. The page records and changes nothing.

No CSRF token on that form, on purpose: CSRF forges a request that rides on the victim's
ambient credentials (cookies), and this endpoint has none; the secret is the token in the
address. Whoever can build the POST already holds the token and could download with it
directly, so a CSRF check would protect nothing, while requiring a session would break the
link for a technician opening it in a fresh browser.
"""

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

from api.errors import error_body
from api.schema import error_responses
from devices.delivery import check_link, download_bundle
from kernel.addresses import client_address
from kernel.errors import ServiceError

NEXT_STEP = {
    "unknown_link": "Check that the whole link was copied; links are long.",
    "link_used": "Each link works once. Ask an operator for a new bundle (it comes with a new password).",
    "link_expired": "Links work for a limited time. Ask an operator for a new bundle.",
    "link_withdrawn": "A newer bundle replaced this one. Use the newest link you were given.",
    "device_revoked": "The device was revoked: its credentials are no longer valid anywhere. "
    "If it should come back, an operator registers it again.",
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
    http_method_names = ["get", "post", "options"]
    content_negotiation_class = AnyAccept
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Download a credential bundle (once)",
        description="The AES-256 encrypted ZIP with device.crt, ca.crt, device.json, README.txt and, "
        "for server-generated keys, device.key. Works once, until it expires. A request whose Accept "
        "names text/html (a browser, or a chat app previewing the link) gets an HTML page with a "
        "download button instead, and the link stays unused.",
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="the ZIP"),
            **error_responses(404, 410, 414, 429, 503),
        },
    )
    def get(self, request: Request, token: str) -> HttpResponse:
        if _wants_html(request):
            return _no_trace(_download_page(request, token))
        return self._download(request, token)

    @extend_schema(
        summary="Download a credential bundle (once), from the page's button",
        description="What the download page's button sends; the same answers as GET for programs.",
        request=None,
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="the ZIP"),
            **error_responses(404, 410, 414, 429, 503),
        },
    )
    def post(self, request: Request, token: str) -> HttpResponse:
        return self._download(request, token)

    def _download(self, request: Request, token: str) -> HttpResponse:
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


def _download_page(request: Request, token: str) -> HttpResponse:
    """The page with the download button, or the refusal page: nothing recorded or changed."""
    try:
        link = check_link(token)
    except ServiceError as error:
        return _refusal(request, error)
    page = render_to_string(
        "download.html",
        {"device_name": link.device.name, "expires_at": link.expires_at},
    )
    return HttpResponse(page)
