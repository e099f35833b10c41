"""OpenAPI entries the endpoints share: the error answers and the list parameters."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from api.pagination import Pagination

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
