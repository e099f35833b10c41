"""How the device API's paths appear in the OpenAPI schema.

The server answers every device path with and without a trailing slash (`OptionalSlashRouter`);
the schema names each operation once, in the form the README documents: the collection with its
slash (`/api/v1/devices/`), everything that names one device without (`/api/v1/devices/{id}`,
`/api/v1/devices/{id}/reissue`), like the original design's `/device/{id}` and `/revoke/{id}`.
"""

from __future__ import annotations

from typing import Any

Endpoint = tuple[str, str, str, Any]


def documented_paths(endpoints: list[Endpoint], **kwargs: Any) -> list[Endpoint]:
    """drf-spectacular preprocessing hook: a path that names one object loses its trailing slash."""
    return [
        (_documented(path, callback), path_regex, method, callback)
        for path, path_regex, method, callback in endpoints
    ]


def _documented(path: str, callback: Any) -> str:
    # A router's list route (the collection) is built with detail=False; every other route of a
    # viewset, and every plain view, names one object (or is a path without a slash already).
    is_collection = getattr(callback, "initkwargs", {}).get("detail") is False and "{" not in path
    return path if is_collection or not path.endswith("/") else path.rstrip("/")


# A real EC P-256 request (a public key and its self-signature, nothing secret), so the docs
# show what `csr` takes and a client generated from the schema has a valid value to start from.
EXAMPLE_CSR = (
    "-----BEGIN CERTIFICATE REQUEST-----\n"
    "MIHRMHgCAQAwFjEUMBIGA1UEAwwLc2Vuc29yLTAwMDEwWTATBgcqhkjOPQIBBggq\n"
    "hkjOPQMBBwNCAASyyyb3uRRAKpEDrExuj//To7a1ggahlQ/qEc797NfBqK+EyFvE\n"
    "+nPt45y3yMEQrFSWEuJo82yoq/wUuErukylnoAAwCgYIKoZIzj0EAwIDSQAwRgIh\n"
    "AL6qU6yh1dqWrbaarsyCdmjktH7nd/3vyge3AKV4APq1AiEAndfJuX4WjggQKly7\n"
    "D4LiDCoQBJEfKqziKhQv40h2wUM=\n"
    "-----END CERTIFICATE REQUEST-----\n"
)
