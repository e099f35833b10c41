"""`create_api_token`: the token is printed once and stored only as a digest."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from accounts.models import ApiToken, token_digest
from pki.keystore import CertificateAuthority


def create(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_prints_a_working_token_once_and_stores_its_digest(ca: CertificateAuthority, make_user: Any) -> None:
    make_user("integrator", "Integrators")
    token, notice = create("integrator", "--name", "factory line 3")
    assert token.startswith("iotp_") and len(token) >= 40
    assert "not shown again" in notice and token not in notice
    stored = ApiToken.objects.get()
    assert stored.digest == token_digest(token) and token not in stored.digest
    assert stored.name == "factory line 3"
    # Tokens expire by default (API_TOKEN_DEFAULT_DAYS): a forgotten one stops working.
    assert stored.expires_at is not None
    assert 364 <= (stored.expires_at - stored.created_at).days <= 365
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/devices/").status_code == 200


def test_no_expiry_only_when_asked(make_user: Any) -> None:
    make_user("integrator", "Integrators")
    create("integrator", "--no-expiry")
    assert ApiToken.objects.get().expires_at is None
    with pytest.raises(CommandError, match="not both"):
        create("integrator", "--no-expiry", "--expires-days", "3")


def test_expiry(make_user: Any) -> None:
    make_user("integrator", "Integrators")
    create("integrator", "--expires-days", "7")
    token = ApiToken.objects.get()
    assert (
        token.expires_at is not None
        and 6.9 < (token.expires_at - token.created_at).total_seconds() / 86400 < 7.1
    )


def test_unknown_user_is_a_one_line_error(db: Any) -> None:
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        create("ghost")


def test_nonpositive_expiry_is_refused(make_user: Any) -> None:
    make_user("integrator")
    with pytest.raises(CommandError, match="at least 1"):
        create("integrator", "--expires-days", "0")
    assert not ApiToken.objects.exists()
