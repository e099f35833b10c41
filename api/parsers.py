"""Bounded JSON request bodies: size, nesting depth and storable characters are checked once,
here, and refused with a code, never met later as a 500."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers, status


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
