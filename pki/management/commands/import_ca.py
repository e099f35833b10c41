from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pki.backup import import_ca
from pki.errors import PKIError
from pki.management.backup_passphrase import add_passphrase_arguments, backup_passphrase, read_passphrase_file
from pki.profiles import sha256_fingerprint


class Command(BaseCommand):
    help = (
        "Restore the CA from an `export_ca` archive on this instance, after the database dump is restored. "
        "Refuses to replace an existing CA without --force."
    )
    # The CA checks would only report the CA this command is about to put in place.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--in", dest="archive", required=True, type=Path, help="archive made by export_ca"
        )
        add_passphrase_arguments(parser)
        parser.add_argument(
            "--force", action="store_true", help="replace an existing CA (its files are kept, renamed)"
        )
        parser.add_argument(
            "--source-key-passphrase-file",
            type=Path,
            default=None,
            help="the old instance's CA_KEY_PASSPHRASE, if this one differs (the key is re-encrypted)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        passphrase = backup_passphrase(options["passphrase_file"])
        source = options["source_key_passphrase_file"]
        try:
            data = options["archive"].read_bytes()
        except OSError as exc:
            raise CommandError(f"Could not read {options['archive']}: {exc.strerror}.") from None
        try:
            result = import_ca(
                data,
                passphrase,
                force=options["force"],
                source_key_passphrase=read_passphrase_file(source) if source else None,
            )
        except PKIError as exc:
            raise CommandError(exc.message) from None
        for kept in result.replaced:
            self.stdout.write(f"Kept the replaced file as {kept}.")
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored the CA {result.certificate.subject.rfc4514_string()} "
                f"(SHA-256 {sha256_fingerprint(result.certificate)}) with CRL number {result.crl_number}; "
                "the next CRL continues from it. Now run `python manage.py refresh_crl --force`."
            )
        )
