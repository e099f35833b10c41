"""What the account commands share: finding the user a command names."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.management.base import CommandError


def user_named(username: str) -> User:
    """The user called `username`, or the command's one-line error."""
    try:
        return User.objects.get(**{User.USERNAME_FIELD: username})
    except User.DoesNotExist:
        raise CommandError(f"No user named '{username}'.") from None
