"""A small typed client of the portal's REST API (httpx)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_TIMEOUT = 60.0


class CliError(Exception):
    """Ends the command with a message and an exit code: 1 server error, 2 usage, 3 unreachable."""

    def __init__(self, message: str, exit_code: int = 1, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.payload = payload or {}


class ServerError(CliError):
    def __init__(self, status: int, code: str, message: str, payload: dict[str, Any]) -> None:
        super().__init__(f"{message} ({status} {code})", exit_code=1, payload=payload)
        self.status = status
        self.code = code


class Unreachable(CliError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Cannot reach the portal at {url}: {reason}", exit_code=3)


class PortalClient:
    def __init__(self, url: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "onboard-cli"}
        if token:
            headers["Authorization"] = f"Token {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from None
        if response.status_code >= 400:
            try:
                payload = response.json()
                error = payload.get("error", {})
                code, message = error.get("code", "error"), error.get("message", response.reason_phrase)
                if payload.get("failed"):
                    message = "unhealthy: " + ", ".join(payload["failed"])
            except ValueError:
                payload, code, message = {}, "error", f"the server answered {response.reason_phrase}"
            raise ServerError(response.status_code, code, message, payload)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def register(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self.json("POST", "/api/v1/devices/", json=body, headers=headers)
        return result

    def device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/api/v1/devices/{device_id}")
        return result

    def devices(self, **filters: Any) -> Iterator[dict[str, Any]]:
        params = {key: value for key, value in filters.items() if value is not None}
        params["page_size"] = 500
        page = 1
        while True:
            body = self.json("GET", "/api/v1/devices/", params={**params, "page": page})
            yield from body["results"]
            if not body.get("next"):
                return
            page += 1

    def revoke(self, device_id: str, reason: str | None) -> dict[str, Any]:
        body = {"reason": reason} if reason else {}
        result: dict[str, Any] = self.json("POST", f"/api/v1/devices/{device_id}/revoke", json=body)
        return result

    def reissue(self, device_id: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", f"/api/v1/devices/{device_id}/reissue", json=body)
        return result

    def new_bundle(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", f"/api/v1/devices/{device_id}/bundle")
        return result

    def download(self, url_or_path: str) -> bytes:
        return self.request("GET", url_or_path).content

    def health(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self.json("GET", "/health")
        except ServerError as exc:
            if exc.status == 503 and exc.payload.get("checks"):
                return exc.payload
            raise
        return result
