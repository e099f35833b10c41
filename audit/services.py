"""Recording audit events: called by the workflows, inside their transactions."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import User

from audit.models import AuditAction, AuditEvent


def record(
    action: AuditAction,
    *,
    actor: Any = None,
    address: str | None = None,
    device_id: uuid.UUID | str | None = None,
    **detail: Any,
) -> AuditEvent:
    user = actor if isinstance(actor, User) else None
    return AuditEvent.objects.create(
        action=action,
        actor=user,
        actor_name=user.get_username() if user else "",
        address=address or None,
        device_id=device_id,
        detail={key: str(value) for key, value in detail.items()},
    )
