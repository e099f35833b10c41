from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.management.users import user_named
from accounts.services import create_api_token


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it once. Only its digest is stored."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="token lifetime in days (default: API_TOKEN_DEFAULT_DAYS, 365)",
        )
        parser.add_argument(
            "--no-expiry", action="store_true", help="a token that never expires (revoke it by hand)"
        )
        parser.add_argument("--name", default="", help="a label to tell tokens apart")

    def handle(self, *args: Any, **options: Any) -> None:
        user = user_named(options["username"])
        if options["expires_days"] is not None and options["expires_days"] < 1:
            raise CommandError("--expires-days must be at least 1.")
        if options["no_expiry"] and options["expires_days"] is not None:
            raise CommandError("Give --expires-days or --no-expiry, not both.")
        days = None if options["no_expiry"] else options["expires_days"] or settings.API_TOKEN_DEFAULT_DAYS
        created = create_api_token(user, name=options["name"], expires_days=days)
        # The token alone on stdout, so scripts can capture it; the notice goes to stderr.
        self.stdout.write(created.value)
        expiry = (
            f"expires {created.token.expires_at:%Y-%m-%d %H:%M} UTC"
            if created.token.expires_at
            else "no expiry"
        )
        self.stderr.write(
            f"Token {created.token.prefix}… for {options['username']} ({expiry}). It is not shown again."
        )
