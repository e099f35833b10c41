"""The REST API as the tests call it: registering a device and following its download link."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from rest_framework.test import APIClient


def post_register(client: APIClient, **body: Any) -> Any:
    """POST /register (an EC key unless told) and hand back the response, whatever it is."""
    body.setdefault("name", "sensor")
    body.setdefault("key_type", "ec-p256")
    return client.post("/register", body, format="json")


def register(client: APIClient, name: str = "meter", **body: Any) -> dict[str, Any]:
    """Register a device (an EC key unless told; a field given as None is left out) and hand
    back the 201 answer."""
    body.setdefault("key_type", "ec-p256")
    fields = {"name": name, **body}
    response = client.post(
        "/register", {key: value for key, value in fields.items() if value is not None}, format="json"
    )
    assert response.status_code == 201, response.content
    answer: dict[str, Any] = response.json()
    return answer


def link_path(answer: dict[str, Any]) -> str:
    """The path of a registration's one-time download link."""
    return str(urlsplit(answer["download_url"]).path)
