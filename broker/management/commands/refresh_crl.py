from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broker.sync import refresh_crl
from kernel.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Re-sign the CRL once half its validity has passed (or with --force) and give it to the broker. "
        "Run it at least every few hours (cron) so the CRL never expires: an expired CRL makes "
        "Mosquitto refuse every device."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="re-sign now even if not due")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            number = refresh_crl(force=options["force"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        if number is None:
            self.stdout.write("The CRL is fresh; nothing to do.")
        else:
            self.stdout.write(f"Signed CRL #{number} and gave it to the broker.")
