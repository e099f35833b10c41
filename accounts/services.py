from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiToken, token_digest
from audit import services as audit
from audit.models import AuditAction


@dataclass(frozen=True)
class CreatedToken:
    token: ApiToken
    #: The token itself: shown once to whoever asked for it, never stored.
    value: str


def create_api_token(
    user: User,
    *,
    name: str = "",
    expires_days: int | None = None,
    actor: Any = None,
    address: str | None = None,
) -> CreatedToken:
    value = ApiToken.new_token_value()
    expires_at = timezone.now() + dt.timedelta(days=expires_days) if expires_days else None
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, digest=token_digest(value), prefix=value[:12], expires_at=expires_at
        )
        _audit(AuditAction.TOKEN_CREATED, token, actor, address)
    return CreatedToken(token=token, value=value)


def revoke_api_token(token: ApiToken, *, actor: Any = None, address: str | None = None) -> bool:
    """Revoke the token: every request with it fails from now on. Returns False (and changes and
    records nothing) if it was already revoked."""
    with transaction.atomic():
        # One UPDATE decides: of two simultaneous revocations, one changes the row and is recorded.
        revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=actor if isinstance(actor, User) else None
        )
        token.refresh_from_db(fields=["revoked_at", "revoked_by"])
        if revoked:
            _audit(AuditAction.TOKEN_REVOKED, token, actor, address)
    return bool(revoked)


def _audit(action: AuditAction, token: ApiToken, actor: Any, address: str | None) -> None:
    # The token's id, prefix and owner: enough to tell it apart, nothing that would let anyone use it.
    audit.record(
        action,
        actor=actor,
        address=address,
        token_id=token.pk,
        prefix=token.prefix,
        owner=token.user.get_username(),
        name=token.name,
    )
