from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broker.sync import broker_drift, sync_broker
from kernel.errors import ServiceError


class Command(BaseCommand):
    help = "Rewrite the broker's ACL and CRL from the database and reload it; --check reports drift only."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true", help="report drift; change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["check"]:
                drift = broker_drift()
                if drift:
                    raise CommandError("The broker is out of step: " + "; ".join(drift) + ".")
                self.stdout.write("The broker has what the database says.")
                return
            result = sync_broker()
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        reload_note = (
            "reloaded" if result.reloaded else "not reloaded (no MOSQUITTO_PID_FILE or BROKER_RELOAD_COMMAND)"
        )
        self.stdout.write(f"Broker files written (CRL #{result.crl_number}); {reload_note}.")
