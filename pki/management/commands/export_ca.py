from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kernel.fs import write_new_private_file
from pki.backup import export_ca
from pki.errors import PKIError
from pki.management.backup_passphrase import add_passphrase_arguments, backup_passphrase


class Command(BaseCommand):
    help = (
        "Write the CA (certificate, encrypted key, current CRL and CRL number) to an encrypted archive. "
        "Back up the database beside it: both are needed to restore."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--out",
            required=True,
            type=Path,
            help="archive to create (mode 0600; must not exist), or - for standard output",
        )
        add_passphrase_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        out: Path = options["out"]
        passphrase = backup_passphrase(options["passphrase_file"])
        try:
            archive = export_ca(passphrase)
        except PKIError as exc:
            raise CommandError(exc.message) from None
        if str(out) == "-":
            # To stdout, e.g. out of a container: `docker compose exec -T web ... --out - > ca.backup`.
            sys.stdout.buffer.write(archive)
            sys.stdout.buffer.flush()
            self.stderr.write("Wrote the CA backup to standard output.")
            return
        try:
            write_new_private_file(out, archive)
        except FileExistsError:
            raise CommandError(
                f"{out} exists; choose a new file name (backups are never overwritten)."
            ) from None
        except OSError as exc:
            raise CommandError(f"Could not write {out}: {exc.strerror}.") from None
        self.stdout.write(self.style.SUCCESS(f"Wrote the CA backup to {out} (mode 0600)."))
