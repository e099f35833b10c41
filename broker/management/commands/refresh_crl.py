from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broker.services import sync_broker
from onboarding.errors import ServiceError
from pki.services import crl_refresh_due, publish_crl


class Command(BaseCommand):
    help = (
        "Re-sign the CRL once half its validity has passed (or with --force) and give it to the broker. "
        "Run it at least every few hours (cron) so the CRL never expires: an expired CRL makes "
        "Mosquitto refuse every device."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="re-sign now even if not due")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["force"] and not crl_refresh_due():
            self.stdout.write("The CRL is fresh; nothing to do.")
            return
        try:
            record = publish_crl()
            result = sync_broker()
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        reloaded = "broker reloaded" if result.reloaded else "broker files written"
        self.stdout.write(
            f"Signed CRL #{record.number}, next update {record.next_update:%Y-%m-%d %H:%M} UTC; {reloaded}."
        )
