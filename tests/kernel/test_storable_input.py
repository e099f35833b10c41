"""Text PostgreSQL cannot store is the client's error (400), on every database, never a 500."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from devices.models import Device


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "n", "metadata": {"site": "a\\u0000b"}}',
        '{"name": "n", "metadata": {"a\\u0000": 1}}',
        '{"name": "n", "metadata": {"list": [{"deep": "\\ud800"}]}}',
    ],
    ids=["nul-in-value", "nul-in-key", "lone-surrogate"],
)
def test_unstorable_text_is_refused_before_the_database(operator_api: APIClient, body: str) -> None:
    response = operator_api.generic("POST", "/register", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "malformed_json"
    assert "NUL character" in response.json()["error"]["message"]
    assert not Device.objects.exists()


def test_paired_surrogates_and_other_text_are_fine(operator_api: APIClient) -> None:
    body = '{"name": "capteur-\\u00e9", "key_type": "ec-p256", "metadata": {"emoji": "\\ud83d\\ude0d"}}'
    response = operator_api.generic("POST", "/register", body, content_type="application/json")
    assert response.status_code in (201, 202), response.content
