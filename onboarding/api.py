"""What every API answer has in common: JSON errors with a code and a sentence, bounded JSON
bodies, throttles configured from settings, and JSON (never HTML) on API paths even for 404/500.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import exceptions, parsers, serializers, status, throttling
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.authentication import ApiTokenAuthentication
from kernel.errors import ServiceError

logger = logging.getLogger(__name__)

PUBLIC_SERVER_ERRORS = {
    "ca_not_initialized": "The certificate authority has not been created yet (an operator runs init_ca).",
    "ca_key_unusable": "The certificate authority's key cannot be used right now; see the log.",
    "crl_publication_failed": "The CRL could not be published, so nothing was changed; see the log.",
    "certificate_lint_failed": "The certificate would break RFC 5280, so it was not signed; see the log.",
    "lock_timeout": "Another process is still publishing the CRL or broker rights, so nothing was "
    "changed; try again shortly.",
    "task_queue_unavailable": "The task queue cannot be reached, so nothing was registered or kept; "
    "try again shortly (/health shows the task queue).",
    "cache_unavailable": "The cache (Redis), which the request throttles need, cannot be reached, so "
    "nothing was done; try again shortly.",
}
DATABASE_UNAVAILABLE = "The database is unavailable or busy; try again shortly."

# Paths whose clients are programs: they get JSON errors, never an HTML page.
API_PATH_PREFIXES = ("/api/", "/register", "/device/", "/revoke/", "/health", "/download/")


def error_body(
    code: str, message: str, fields: dict[str, list[str]] | None = None, **details: Any
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    error.update(details)
    return {"error": error}


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


class BoundedJSONParser(parsers.JSONParser):
    """JSON bodies up to API_MAX_BODY_BYTES and API_MAX_JSON_DEPTH levels deep; bigger or deeper
    ones are refused with a code, never met later as a 500."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        limit = settings.API_MAX_BODY_BYTES
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise body_too_large()
        try:
            data = json.loads(body.decode(settings.DEFAULT_CHARSET))
        except RecursionError:
            # The decoder recurses once per level: a few kilobytes of `{"a": {"a": ...` exhaust the
            # interpreter's stack long before the size limit is reached.
            raise json_too_deep() from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(
                f"The request body is not valid JSON: {exc}.", code="malformed_json"
            ) from None
        if too_deep(data, settings.API_MAX_JSON_DEPTH):
            # Serializers, json.dumps and the database driver recurse too: bounded here, once.
            raise json_too_deep()
        if not _storable(data):
            # PostgreSQL's text and jsonb refuse U+0000, and an unpaired surrogate is not UTF-8:
            # refused here as the client's error, not met later as a database error (500).
            raise exceptions.ParseError(
                "The request body contains a NUL character (\\u0000) or an unpaired surrogate, "
                "which cannot be stored.",
                code="invalid_characters",
            )
        return data


def body_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes.")


class JSONTooDeep(exceptions.ParseError):
    default_code = "json_too_deep"


def json_too_deep() -> JSONTooDeep:
    return JSONTooDeep(
        f"The request body nests objects or arrays more than {settings.API_MAX_JSON_DEPTH} levels deep."
    )


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether objects or arrays nest more than max_depth levels (the outermost one is level 1)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False


def _storable(value: Any) -> bool:
    """No string anywhere in a parsed JSON value (keys included) holds U+0000 or a lone surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or (not item.isascii() and _has_lone_surrogate(item)):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class ConfiguredRateThrottle(throttling.SimpleRateThrottle):
    """Rates read from settings.API_THROTTLE_RATES when used, so they follow the settings."""

    def get_rate(self) -> str | None:
        rates: dict[str, str] = settings.API_THROTTLE_RATES
        return rates.get(self.scope or "")


class AnonymousThrottle(ConfiguredRateThrottle):
    scope = "anon"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class UserThrottle(ConfiguredRateThrottle):
    scope = "user"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


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


ERROR_SERIALIZER = inline_serializer(
    name="Error",
    fields={
        "error": inline_serializer(
            name="ErrorDetail",
            fields={
                "code": serializers.CharField(help_text="machine-readable error code"),
                "message": serializers.CharField(help_text="what went wrong, in one sentence"),
                "fields": serializers.DictField(
                    child=serializers.ListField(child=serializers.CharField()),
                    required=False,
                    help_text="per-field messages, for invalid input",
                ),
                "device_id": serializers.CharField(
                    required=False, help_text="the device concerned, on conflicts"
                ),
            },
        )
    },
)

_ERROR_DESCRIPTIONS = {
    400: "invalid input or malformed JSON",
    401: "no or invalid credentials",
    403: "the caller's role does not allow this",
    404: "unknown or malformed device id, or a page past the end of a list",
    405: "method not allowed",
    409: "conflict with the current state",
    410: "the link was used, expired or replaced by a newer bundle",
    413: "request body too large",
    414: "the path and query are longer than the HTTP server takes (gunicorn: 4094 bytes); the HTTP "
    "server answers this itself, not as JSON",
    415: "the body is not JSON",
    422: "the Idempotency-Key was already used for a different request",
    429: "throttled",
    503: "a dependency (CA, database, task queue, cache) is unavailable",
}


# Answered by the HTTP server in front of Django, with its own body.
_NOT_FROM_THE_PORTAL = {414}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """OpenAPI entries for the error answers an endpoint can give."""
    return {
        code: OpenApiResponse(
            None if code in _NOT_FROM_THE_PORTAL else ERROR_SERIALIZER, _ERROR_DESCRIPTIONS[code]
        )
        for code in codes
    }


class Pagination(PageNumberPagination):
    """Page numbers, with `page_size` validated: a bad value is an error, not silently the default."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.getlist(self.page_size_query_param)
        if not raw:
            return self.page_size
        if len(raw) > 1 or not raw[0].isdigit() or not 1 <= int(raw[0]) <= self.max_page_size:
            raise exceptions.ValidationError(
                {self.page_size_query_param: [f"Give one whole number from 1 to {self.max_page_size}."]}
            )
        return int(raw[0])

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        # DRF reads a missing, empty or repeated `page` as page 1; only a missing one is.
        raw = request.query_params.getlist(self.page_query_param)
        if raw and (len(raw) > 1 or not raw[0].isdigit() or int(raw[0]) < 1):
            raise exceptions.ValidationError(
                {self.page_query_param: ["Give one whole number from 1 (the first page)."]}
            )
        return super().paginate_queryset(queryset, request, view)


def list_parameters(ordering_fields: list[str]) -> list[OpenApiParameter]:
    """The paging and ordering parameters with the limits the server enforces."""
    return [
        OpenApiParameter("page", {"type": "integer", "minimum": 1}, description="page number, from 1"),
        OpenApiParameter(
            "page_size",
            {"type": "integer", "minimum": 1, "maximum": Pagination.max_page_size},
            description="results per page",
        ),
        OpenApiParameter(
            "ordering",
            str,
            enum=[prefix + field for field in ordering_fields for prefix in ("", "-")],
            description="sort by this field; prefix - to reverse",
        ),
    ]


class StrictOrderingFilter(OrderingFilter):
    """`ordering` names one sortable field; an unknown one is an error, not silently ignored."""

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> Any:
        values = request.query_params.getlist(self.ordering_param)
        if values:
            allowed = set(view.ordering_fields)
            if len(values) > 1 or values[0].lstrip("-") not in allowed:
                choices = ", ".join(sorted(allowed))
                raise exceptions.ValidationError(
                    {self.ordering_param: [f"Order by one of: {choices} (prefix - to reverse)."]}
                )
        return super().get_ordering(request, queryset, view)
