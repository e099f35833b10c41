"""API tokens under attack and after a leak (issue #16, items 15 and 16): failed token
authentication is throttled per client address in the shared cache (a real Redis here), and a
token can be listed and revoked in the admin or with `revoke_api_token`, failing at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import create_api_token
from audit.models import AuditAction, AuditEvent
from tests.support import ROOT
from tests.support.helpers import subprocess_database_url
from tests.support.portal import signed_in

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ATTACKER = "203.0.113.7"
COLLEAGUE = "198.51.100.9"


@pytest.fixture
def redis_cache(settings: Any) -> Any:
    """The cache every worker process shares in production: a real Redis."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"token-hardening-{os.getpid()}",
        }
    }
    cache.clear()
    yield cache
    cache.clear()


def api(token: str, address: str) -> Any:
    return APIClient(REMOTE_ADDR=address, HTTP_AUTHORIZATION=f"Token {token}").get("/api/v1/devices/")


def test_a_hundred_bad_tokens_meet_a_throttle(
    ca: Any, make_user: Any, redis_cache: Any, settings: Any
) -> None:
    settings.API_TOKEN_FAILURE_LIMIT = 20
    settings.API_TOKEN_FAILURE_WINDOW_SECONDS = 60
    good = create_api_token(make_user("integrator", "Integrators")).value
    answers = [api(f"iotp_guess{number:04d}", ATTACKER) for number in range(100)]
    codes = [answer.status_code for answer in answers]
    assert codes[:20] == [401] * 20
    assert codes[20:] == [429] * 80
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "throttled"
    assert "failed API token attempts" in refused.json()["error"]["message"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Another address is not affected; the guessing address is, even with a valid token (a
    # different answer would tell the guesser which guess was right).
    assert api(good, COLLEAGUE).status_code == 200
    assert api(good, ATTACKER).status_code == 429
    # The count lives in Redis, where every worker process reads it.
    assert any(b"api-token-failures" in key for key in redis_cache._cache.get_client().keys("*"))


def test_the_block_ends_with_its_window_however_long_the_flood(
    ca: Any, make_user: Any, redis_cache: Any, settings: Any
) -> None:
    settings.API_TOKEN_FAILURE_LIMIT = 5
    settings.API_TOKEN_FAILURE_WINDOW_SECONDS = 2
    good = create_api_token(make_user("integrator", "Integrators")).value
    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # the flood goes on for most of the window
        assert api("iotp_guess", ATTACKER).status_code in {401, 429}
    assert api(good, ATTACKER).status_code == 429
    time.sleep(max(0.0, started + 2.2 - time.monotonic()))
    assert api(good, ATTACKER).status_code == 200


def test_valid_tokens_are_never_counted(ca: Any, make_user: Any, redis_cache: Any, settings: Any) -> None:
    settings.API_TOKEN_FAILURE_LIMIT = 3
    good = create_api_token(make_user("integrator", "Integrators")).value
    assert [api(good, ATTACKER).status_code for _ in range(10)] == [200] * 10


# --- Revocation ---


def test_a_revoked_token_fails_at_once(ca: Any, make_user: Any) -> None:
    created = create_api_token(make_user("integrator", "Integrators"), name="ci")
    client = APIClient(HTTP_AUTHORIZATION=f"Token {created.value}")
    assert client.get("/api/v1/devices/").status_code == 200  # also records last_used_at
    out = StringIO()
    call_command("revoke_api_token", str(created.token.pk), stdout=out)
    assert (
        out.getvalue().strip()
        == f"Revoked token {created.token.pk} 'ci' ({created.token.prefix}…) of integrator."
    )
    refused = client.get("/api/v1/devices/")
    assert refused.status_code == 401
    assert refused.json()["error"] == {
        "code": "authentication_failed",
        "message": "The API token was revoked; ask for a new one.",
    }
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_REVOKED)
    assert event.detail["token_id"] == str(created.token.pk) and event.detail["owner"] == "integrator"
    assert created.value not in str(event.detail)
    # Again: nothing changes, and it says so.
    out = StringIO()
    call_command("revoke_api_token", str(created.token.pk), stdout=out)
    assert out.getvalue().startswith("Already revoked: token")
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN_REVOKED).count() == 1


def test_revoke_by_user_and_name(ca: Any, make_user: Any) -> None:
    user = make_user("integrator", "Integrators")
    ci, laptop = create_api_token(user, name="ci"), create_api_token(user, name="laptop")
    other = create_api_token(make_user("someone-else", "Integrators"), name="ci")
    call_command("revoke_api_token", "--user", "integrator", "--name", "ci", stdout=StringIO())
    assert {token.name for token in ApiToken.objects.filter(user=user, revoked_at__isnull=False)} == {"ci"}
    call_command("revoke_api_token", "--user", "integrator", stdout=StringIO())
    states = {token.pk: token.is_revoked for token in ApiToken.objects.all()}
    assert states == {ci.token.pk: True, laptop.token.pk: True, other.token.pk: False}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["4242"], "No API token with id 4242."),
        (["--user", "ghost"], "No user named 'ghost'."),
        (["--user", "integrator", "--name", "nope"], "User 'integrator' has no API token named 'nope'."),
        ([], "Give a token id or --user USERNAME (not both)."),
    ],
)
def test_revoke_command_errors_are_one_line(make_user: Any, arguments: list[str], message: str) -> None:
    make_user("integrator", "Integrators")
    with pytest.raises(CommandError) as raised:
        call_command("revoke_api_token", *arguments, stdout=StringIO())
    assert str(raised.value) == message


@pytest.mark.django_db(transaction=True)
def test_revoke_command_exits_non_zero_on_an_unknown_token(tmp_path: Path) -> None:
    """The real manage.py in its own process: one line on stderr, exit status 1."""
    environment = {**os.environ, "DATABASE_URL": subprocess_database_url()}
    done = subprocess.run(
        [sys.executable, "manage.py", "revoke_api_token", "4242"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    # (Above it, in this test environment: start-up logging and the missing-CA system check.)
    assert done.stderr.strip().splitlines()[-1] == "CommandError: No API token with id 4242."


# --- The admin's list ---


@pytest.fixture
def tokens(make_user: Any) -> list[Any]:
    return [
        create_api_token(make_user("integrator", "Integrators"), name="factory line 3"),
        create_api_token(make_user("ci-robot", "Integrators"), name="ci"),
    ]


def admin_client(make_user: Any, verified_login: Any, role: str | None, **flags: Any) -> Client:
    return signed_in(
        make_user, verified_login, role, f"{(role or 'root').lower()}-admin", is_staff=True, **flags
    )


@pytest.mark.parametrize(
    ("role", "flags", "sees", "revokes"),
    [
        (None, {"is_superuser": True}, True, True),
        ("Operators", {}, True, True),
        ("Auditors", {}, True, False),
        ("Integrators", {}, False, False),
    ],
)
def test_admin_lists_every_token_without_its_secret(
    ca: Any,
    make_user: Any,
    verified_login: Any,
    tokens: list[Any],
    role: str | None,
    flags: dict[str, Any],
    sees: bool,
    revokes: bool,
) -> None:
    client = admin_client(make_user, verified_login, role, **flags)
    page = client.get("/admin/accounts/apitoken/")
    if not sees:
        assert page.status_code == 302 and "/admin/login/" in page["Location"]
    else:
        assert page.status_code == 200
        html = page.content.decode()
        for created in tokens:
            assert created.token.prefix in html and created.token.name in html
            assert created.value not in html and created.token.digest not in html
            detail = client.get(f"/admin/accounts/apitoken/{created.token.pk}/change/").content.decode()
            assert created.value not in detail and created.token.digest not in detail
            assert created.token.prefix in detail
        for column in ("Created at", "Last used at", "Expires at", "User"):
            assert column in html
        assert ('value="revoke_selected"' in html) == revokes
    target = tokens[0].token
    answer = client.post(
        "/admin/accounts/apitoken/",
        {"action": "revoke_selected", "_selected_action": [str(target.pk)]},
        REMOTE_ADDR="198.51.100.3",
    )
    target.refresh_from_db()
    assert target.is_revoked == revokes
    if revokes:
        assert answer.status_code == 302
        event = AuditEvent.objects.get(action=AuditAction.TOKEN_REVOKED)
        assert event.actor_name == f"{(role or 'root').lower()}-admin" and event.address == "198.51.100.3"
        assert target.revoked_by is not None and target.revoked_by.username == event.actor_name
        assert (
            APIClient(HTTP_AUTHORIZATION=f"Token {tokens[0].value}").get("/api/v1/devices/").status_code
            == 401
        )
    else:
        assert not AuditEvent.objects.filter(action=AuditAction.TOKEN_REVOKED).exists()
    # Nobody adds, edits or deletes tokens here (add shows no secret; delete would lose history).
    assert client.get("/admin/accounts/apitoken/add/").status_code in {302, 403}
    assert client.post(f"/admin/accounts/apitoken/{target.pk}/delete/", {"post": "yes"}).status_code in {
        302,
        403,
    }
    assert ApiToken.objects.filter(pk=target.pk).exists()


def test_token_creation_is_audited(make_user: Any) -> None:
    created = create_api_token(make_user("integrator", "Integrators"), name="ci")
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_CREATED)
    assert event.detail["prefix"] == created.token.prefix and created.value not in str(event.detail)
