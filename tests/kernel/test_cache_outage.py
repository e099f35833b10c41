"""Issue #16, item 1: a Redis cache (CACHE_URL=redis://…) that is down or frozen answers 503
`cache_unavailable` within 10 s, never 500, and lets no token through unchecked.

The portal runs under gunicorn with CACHE_URL naming a redis-server of the test's own
(tests/support/redis_server.py): frozen is SIGSTOP (TCP accepted, nothing answers), stopped is the
process gone. The API throttles and the failed-token throttle read that cache on every API
request; they fail closed: while the cache is down, no request is let through unthrottled.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.db import OperationalError
from django.test import RequestFactory
from django.urls import get_resolver

from accounts.services import create_api_token
from devices.models import Device, DeviceStatus
from kernel.cache import CacheUnavailable
from tests.support.helpers import free_port, timed
from tests.support.portal import restore_roles
from tests.support.redis_server import RedisServer, own_redis
from tests.support.workers import gunicorn_server, worker_environment

__all__ = ["own_redis"]  # the fixture

#: The issue's bound: every request answers within this, whatever is frozen.
ANSWER_BOUND_SECONDS = 10.0


@pytest.fixture
def portal_on_own_cache(own_redis: RedisServer, ca: Any, make_user: Any) -> Iterator[tuple[str, str, str]]:
    """(base URL, an operator's token, a device id): gunicorn with CACHE_URL on `own_redis`."""
    restore_roles()  # a previous transactional test's flush removed them
    user = make_user("cache-operator", "Operators")
    token = create_api_token(user).value
    device = Device.objects.create(name="cached", status=DeviceStatus.ACTIVE)
    port = free_port()
    environment = worker_environment(CACHE_URL=own_redis.url, BROKER_CATCH_UP_AT_START="false")
    with gunicorn_server(environment, port, workers=1):
        yield f"http://127.0.0.1:{port}", token, str(device.pk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["frozen", "stopped"])
def test_api_requests_with_the_cache_down_answer_503_cache_unavailable_in_time(
    how: str, own_redis: RedisServer, portal_on_own_cache: tuple[str, str, str]
) -> None:
    base_url, token, device_id = portal_on_own_cache
    with httpx.Client(base_url=base_url, timeout=60) as client:
        operator = {"Authorization": f"Token {token}"}
        assert client.get(f"/device/{device_id}", headers=operator).status_code == 200
        assert client.get("/portal/login/").status_code == 200
        if how == "frozen":
            own_redis.freeze()
        else:
            own_redis.stop()

        answers = {
            "valid token": timed(lambda: client.get(f"/device/{device_id}", headers=operator)),
            "register": timed(
                lambda: client.post("/register", json={"name": "while-down"}, headers=operator)
            ),
            "wrong token": timed(
                lambda: client.get(f"/device/{device_id}", headers={"Authorization": "Token not-a-token"})
            ),
            "health (anonymous)": timed(lambda: client.get("/health")),
        }
        # The portal's pages do not use the cache (sessions and sign-in lockouts are in the
        # database): they keep working while it is down.
        login_page = client.get("/portal/login/")

        if how == "frozen":
            own_redis.thaw()
        else:
            own_redis.start()
        after = client.get(f"/device/{device_id}", headers=operator)

    for name, (response, elapsed) in answers.items():
        assert elapsed < ANSWER_BOUND_SECONDS, f"{name} answered after {elapsed:.1f} s"
        assert response.status_code == 503, (name, response.text)
        assert response.json()["error"]["code"] == "cache_unavailable", (name, response.text)
    assert login_page.status_code == 200
    assert not Device.objects.filter(name="while-down").exists()  # nothing kept
    assert after.status_code == 200, after.text  # the same process, once the cache is back


@pytest.mark.parametrize("path", ["/portal/", "/register"])
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (CacheUnavailable("The cache (Redis) does not answer: TimeoutError"), "cache_unavailable"),
        (OperationalError("PostgreSQL did not answer within 8 s"), "database_unavailable"),
    ],
)
def test_a_dependency_outage_outside_the_api_views_is_a_503_naming_it(
    path: str, error: Exception, code: str
) -> None:
    """handler500 (a middleware or a plain Django view failed): 503 with the code, JSON on API
    paths and a line of text on pages, never the 500 page."""
    server_error = get_resolver().resolve_error_handler(500)  # what Django calls
    request = RequestFactory().get(path)
    try:
        raise error
    except type(error):
        response = server_error(request)

    assert response.status_code == 503
    if path == "/register":
        assert response["Content-Type"] == "application/json"
        assert b'"code": "' + code.encode() + b'"' in response.content
    else:
        assert code.encode() in response.content
        assert b"Traceback" not in response.content
