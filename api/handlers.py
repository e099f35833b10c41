"""Every error as JSON with a code and a sentence: DRF's exception handler (EXCEPTION_HANDLER) and
Django's handler400/404/500, which answer JSON (never HTML) on API paths and 503 naming a
dependency that is down."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.authentication import ApiTokenAuthentication
from api.errors import DATABASE_UNAVAILABLE, PUBLIC_SERVER_ERRORS, error_body
from api.parsers import JSONTooDeep, PayloadTooLarge, body_too_large
from kernel.errors import ServiceError

logger = logging.getLogger(__name__)

# Paths whose clients are programs: they get JSON errors, never an HTML page.
API_PATH_PREFIXES = (
    "/api/",
    "/register",
    "/device/",
    "/revoke/",
    "/health",
    "/download/",
    "/.well-known/est/",
)


_CODES: dict[type[exceptions.APIException], str] = {
    # Most specific first: the first class that matches gives the code.
    JSONTooDeep: "json_too_deep",
    exceptions.ParseError: "malformed_json",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    PayloadTooLarge: "request_too_large",
}


def _field_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    if isinstance(detail, dict):
        fields: dict[str, list[str]] = {}
        for name, value in detail.items():
            key = (
                f"{prefix}{name}"
                if name != "non_field_errors"
                else (prefix.rstrip(".") or "non_field_errors")
            )
            for field_name, messages in _field_errors(value, f"{key}.").items():
                fields.setdefault(field_name, []).extend(messages)
        return fields
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix.rstrip("."): [str(item) for item in detail]}
        merged: dict[str, list[str]] = {}
        for index, item in enumerate(detail):
            for name, messages in _field_errors(item, f"{prefix}{index}.").items():
                merged.setdefault(name, []).extend(messages)
        return merged
    return {prefix.rstrip("."): [str(detail)]}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error as `{"error": {"code", "message", "fields"?}}` with the status that fits."""
    if isinstance(exc, ServiceError):
        message = exc.message
        if exc.status >= 500:
            # Server-side failures name files and settings: those go to the log, not the client.
            logger.error("%s: %s", exc.code, exc.message)
            message = PUBLIC_SERVER_ERRORS.get(
                exc.code, "A component the portal needs is unavailable; see the log."
            )
        return Response(error_body(exc.code, message, **exc.details), status=exc.status)
    if isinstance(exc, OperationalError):
        logger.error("database error: %s", exc)
        return Response(
            error_body("database_unavailable", DATABASE_UNAVAILABLE),
            status=503,
        )
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "Nothing is at this address."), status=404)
    if isinstance(exc, RequestDataTooBig):
        # Django refuses to read a body past DATA_UPLOAD_MAX_MEMORY_SIZE before our parser sees
        # it; that body is over API_MAX_BODY_BYTES too, and gets the same answer as any other.
        return Response(error_body("request_too_large", str(body_too_large().detail)), status=413)
    if isinstance(exc, DjangoPermissionDenied):
        return Response(error_body("permission_denied", "You may not do this."), status=403)
    if isinstance(exc, exceptions.ValidationError):
        fields = _field_errors(exc.detail)
        names = ", ".join(sorted(fields))
        return Response(
            error_body("invalid", f"The request has invalid fields: {names}.", fields=fields), status=400
        )
    auth_header = getattr(exc, "auth_header", None)
    if isinstance(exc, exceptions.NotAuthenticated) and auth_header:
        wrong_scheme = _foreign_authorization_scheme(context.get("request"))
        if wrong_scheme is not None:
            exc = exceptions.AuthenticationFailed(
                f"The Authorization header uses {wrong_scheme} scheme; this API takes "
                f"'Authorization: {ApiTokenAuthentication.keyword} <token>'."
            )
            exc.auth_header = auth_header  # type: ignore[attr-defined]  # DRF's WWW-Authenticate
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code = next((code for kind, code in _CODES.items() if isinstance(exc, kind)), "error")
    message = str(exc.detail) if not isinstance(exc.detail, list | dict) else "The request failed."
    response.data = error_body(code, message)
    return response


def _foreign_authorization_scheme(request: Request | None) -> str | None:
    """The scheme of an Authorization header that no authenticator took (`Bearer`, `Basic`), so
    the answer says which scheme to use instead of "credentials were not provided"."""
    if request is None:
        return None
    scheme = request.headers.get("Authorization", "").split(" ", 1)[0]
    if not scheme or scheme.lower() == ApiTokenAuthentication.keyword.lower():
        return None
    # Quoted back only when it looks like a scheme name (RFC 9110 token), never as a whole header.
    return f"the '{scheme}'" if len(scheme) <= 20 and scheme.isascii() and scheme.isalnum() else "an unknown"


def _is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith(API_PATH_PREFIXES)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api_request(request):
        return JsonResponse(error_body("not_found", "Nothing is at this address."), status=404)
    return defaults.page_not_found(request, exception)


def _dependency_outage(exc: BaseException | None) -> tuple[str, str] | None:
    """The code and sentence for an error that means a dependency is down or frozen, or None."""
    if isinstance(exc, ServiceError) and exc.status == 503:
        return exc.code, PUBLIC_SERVER_ERRORS.get(exc.code, "A component the portal needs is unavailable.")
    if isinstance(exc, OperationalError):
        return "database_unavailable", DATABASE_UNAVAILABLE
    return None


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this handler (handler500) while it handles the exception, raised anywhere:
    # a view outside DRF, a middleware, a portal page. A dependency that is down is a 503
    # naming it there too, not a 500.
    outage = _dependency_outage(sys.exc_info()[1])
    if outage is not None:
        code, message = outage
        if _is_api_request(request):
            return JsonResponse(error_body(code, message), status=503)
        return HttpResponse(
            f"Service unavailable ({code}): {message}\n", status=503, content_type="text/plain; charset=utf-8"
        )
    if _is_api_request(request):
        body = error_body("server_error", "The server failed to handle this request; it has been logged.")
        return JsonResponse(body, status=500)
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        if _is_api_request(request):
            return JsonResponse(error_body("request_too_large", str(body_too_large().detail)), status=413)
        return HttpResponse(
            "The request body is too large.\n", status=413, content_type="text/plain; charset=utf-8"
        )
    if _is_api_request(request):
        return JsonResponse(error_body("bad_request", "The request could not be understood."), status=400)
    return defaults.bad_request(request, exception)
