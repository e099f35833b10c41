"""The JSON error body every API answer shares: `{"error": {"code", "message", ...}}`, and the
sentences a client is given for server-side failures (whose details go to the log only)."""

from __future__ import annotations

from typing import Any

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


def error_body(
    code: str, message: str, fields: dict[str, list[str]] | None = None, **details: Any
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    error.update(details)
    return {"error": error}
