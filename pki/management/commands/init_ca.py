from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pki.authority import DEFAULT_CA_COMMON_NAME, DEFAULT_CA_KEY_TYPE, DEFAULT_CA_VALIDITY_DAYS, initialize_ca
from pki.errors import PKIError
from pki.profiles import KeyType, sha256_fingerprint


class Command(BaseCommand):
    help = "Create the root certificate authority and its first CRL. Does nothing if the CA exists."
    # The CA checks would only report what this command is about to create.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--common-name", default=DEFAULT_CA_COMMON_NAME)
        parser.add_argument("--validity-days", type=int, default=DEFAULT_CA_VALIDITY_DAYS)
        parser.add_argument(
            "--key-type", choices=[kind.value for kind in KeyType], default=DEFAULT_CA_KEY_TYPE.value
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            status = initialize_ca(
                common_name=options["common_name"],
                validity_days=options["validity_days"],
                key_type=KeyType(options["key_type"]),
            )
        except PKIError as exc:
            raise CommandError(exc.message) from None
        certificate = status.certificate
        summary = (
            f"{certificate.subject.rfc4514_string()}, "
            f"valid until {certificate.not_valid_after_utc:%Y-%m-%d}, "
            f"SHA-256 {sha256_fingerprint(certificate)}"
        )
        if status.created:
            self.stdout.write(self.style.SUCCESS(f"Created the certificate authority: {summary}"))
        else:
            self.stdout.write(f"The certificate authority already exists; nothing changed: {summary}")
