"""Where export_ca and import_ca take the backup passphrase from: a file, or the environment."""

from __future__ import annotations

import os
from argparse import ArgumentParser
from pathlib import Path

from django.core.management.base import CommandError

PASSPHRASE_VARIABLE = "CA_BACKUP_PASSPHRASE"  # noqa: S105 - a variable name, not a value


def add_passphrase_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        help=f"file holding the backup passphrase (default: the {PASSPHRASE_VARIABLE} environment variable)",
    )


def read_passphrase_file(path: Path) -> bytes:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise CommandError(f"Could not read the passphrase file {path}: {exc.strerror}.") from None
    if not value:
        raise CommandError(f"The passphrase file {path} is empty.")
    return value.encode()


def backup_passphrase(path: Path | None) -> bytes:
    # Never a command-line argument: those show in `ps` and shell history.
    if path is not None:
        return read_passphrase_file(path)
    value = os.environ.get(PASSPHRASE_VARIABLE, "")
    if not value:
        raise CommandError(f"Give the backup passphrase with --passphrase-file or {PASSPHRASE_VARIABLE}.")
    return value.encode()
