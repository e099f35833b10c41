from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.utils import timezone

from accounts.models import ApiToken, token_digest


@dataclass(frozen=True)
class CreatedToken:
    token: ApiToken
    #: The token itself: shown once to whoever asked for it, never stored.
    value: str


def create_api_token(user: User, *, name: str = "", expires_days: int | None = None) -> CreatedToken:
    value = ApiToken.new_token_value()
    expires_at = timezone.now() + dt.timedelta(days=expires_days) if expires_days else None
    token = ApiToken.objects.create(
        user=user, name=name, digest=token_digest(value), prefix=value[:12], expires_at=expires_at
    )
    return CreatedToken(token=token, value=value)
