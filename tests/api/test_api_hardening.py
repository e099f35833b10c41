"""Hostile request bodies and headers get a JSON error with a code, never a 500 or a bare 400."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from rest_framework.test import APIClient

from accounts.services import create_api_token
from devices.models import Device
from tests.support.portal import restore_roles


def nested(depth: int) -> str:
    """`{"name": "n", "metadata": {"a": {"a": ... {} ...}}}` with `depth` objects under metadata."""
    return '{"name": "nested", "metadata": ' + '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1) + "}"


class TestNesting:
    @pytest.mark.parametrize("depth", [5_000, 990, 40])
    def test_deep_nesting_is_400_with_a_code(
        self, operator_api: APIClient, settings: Any, depth: int
    ) -> None:
        body = nested(depth)
        assert len(body) < settings.API_MAX_BODY_BYTES  # the size check alone lets it through
        response = operator_api.post("/register", body, content_type="application/json")
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "json_too_deep"
        assert str(settings.API_MAX_JSON_DEPTH) in error["message"]
        assert not Device.objects.exists()

    def test_nesting_up_to_the_limit_is_accepted(self, operator_api: APIClient, settings: Any) -> None:
        # The body object is level 1 and metadata level 2: metadata may nest to the limit.
        body = json.loads(nested(settings.API_MAX_JSON_DEPTH - 1))
        body["key_type"] = "ec-p256"
        response = operator_api.post("/register", body, format="json")
        assert response.status_code == 201, response.content
        too_deep = json.loads(nested(settings.API_MAX_JSON_DEPTH))
        response = operator_api.post("/register", too_deep, format="json")
        assert response.json()["error"]["code"] == "json_too_deep"

    def test_deep_arrays_count_too(self, operator_api: APIClient, settings: Any) -> None:
        depth = settings.API_MAX_JSON_DEPTH
        body = '{"name": "x", "metadata": {"list": ' + "[" * depth + "]" * depth + "}}"
        response = operator_api.post("/register", body, content_type="application/json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "json_too_deep"


class TestOversizeBodies:
    """Every body over API_MAX_BODY_BYTES is a 413 with the API's JSON error, whatever its size:
    also past Django's own DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), which used to answer 400."""

    @pytest.mark.parametrize("size", [100_000, 2_700_000, 6_000_000])
    def test_over_the_limit_is_413_over_real_http(
        self, live_server: Any, ca: Any, make_user: Any, settings: Any, size: int
    ) -> None:
        restore_roles()  # the live server's transactional tests flush the role groups
        token = "Token " + create_api_token(make_user("big-sender", "Operators")).value
        assert size > settings.API_MAX_BODY_BYTES
        body = '{"name": "' + "x" * size + '"}'
        response = httpx.post(
            f"{live_server.url}/register",
            content=body,
            headers={"Authorization": token, "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 413, response.text
        assert response.headers["Content-Type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "request_too_large"
        assert str(settings.API_MAX_BODY_BYTES) in error["message"]
        assert not Device.objects.exists()

    def test_an_oversize_form_outside_the_api_is_413_too(self, live_server: Any, settings: Any) -> None:
        settings.CSRF_COOKIE_SECURE = False  # plain HTTP to the live server
        with httpx.Client(base_url=live_server.url, timeout=30) as browser:
            assert browser.get("/portal/login/").status_code == 200
            token = browser.cookies["csrftoken"]
            response = browser.post(
                "/portal/login/",
                content=b"username=" + b"x" * 3_000_000 + b"&csrfmiddlewaretoken=" + token.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": live_server.url},
            )
        assert response.status_code == 413, response.text[:500]
        assert response.text == "The request body is too large.\n"


class TestAuthorizationScheme:
    def test_bearer_is_refused_naming_the_token_scheme(self, ca: Any, make_user: Any) -> None:
        value = create_api_token(make_user("bearer-user", "Operators")).value
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
        response = client.get("/api/v1/devices")
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "authentication_failed"
        assert error["message"] == (
            "The Authorization header uses the 'Bearer' scheme; "
            "this API takes 'Authorization: Token <token>'."
        )
        assert "not provided" not in error["message"]
        assert response["WWW-Authenticate"] == "Token"

    def test_token_scheme_still_works_in_any_case(self, ca: Any, make_user: Any) -> None:
        value = create_api_token(make_user("token-user", "Operators")).value
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"token {value}")
        assert client.get("/api/v1/devices").status_code == 200

    def test_no_header_still_says_not_provided(self, ca: Any) -> None:
        response = APIClient().get("/api/v1/devices")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"
