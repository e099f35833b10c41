from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.management.users import user_named
from accounts.models import ApiToken
from accounts.services import revoke_api_token


class Command(BaseCommand):
    help = (
        "Revoke API tokens: one by its id (as listed in the admin), or every token of --user "
        "(only those named --name with it). A revoked token fails from the next request on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("token_id", nargs="?", type=int, help="the token's id (admin: API tokens)")
        parser.add_argument("--user", help="revoke this user's tokens")
        parser.add_argument("--name", help="with --user: only the tokens with this name")

    def handle(self, *args: Any, **options: Any) -> None:
        tokens = self._select(options["token_id"], options["user"], options["name"])
        revoked = [token for token in tokens if revoke_api_token(token)]
        already = [token for token in tokens if token not in revoked]
        parts = []
        if revoked:
            parts.append("Revoked " + ", ".join(_label(token) for token in revoked) + ".")
        if already:
            parts.append("Already revoked: " + ", ".join(_label(token) for token in already) + ".")
        self.stdout.write(" ".join(parts))

    def _select(self, token_id: int | None, username: str | None, name: str | None) -> list[ApiToken]:
        if (token_id is None) == (username is None):
            raise CommandError("Give a token id or --user USERNAME (not both).")
        if name is not None and username is None:
            raise CommandError("--name selects among the tokens of --user USERNAME.")
        tokens = ApiToken.objects.select_related("user").order_by("pk")
        if token_id is not None:
            found = list(tokens.filter(pk=token_id))
            if not found:
                raise CommandError(f"No API token with id {token_id}.")
            return found
        assert username is not None  # one of the two, checked above
        selected = tokens.filter(user=user_named(username))
        if name is not None:
            selected = selected.filter(name=name)
        found = list(selected)
        if not found:
            named = f" named '{name}'" if name is not None else ""
            raise CommandError(f"User '{username}' has no API token{named}.")
        return found


def _label(token: ApiToken) -> str:
    name = f" '{token.name}'" if token.name else ""
    return f"token {token.pk}{name} ({token.prefix}…) of {token.user.get_username()}"
