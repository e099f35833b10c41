from __future__ import annotations

import io
from typing import Any

import qrcode
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.management.users import user_named

BACKUP_CODES = 8


class Command(BaseCommand):
    help = "Give USERNAME a TOTP authenticator (QR code in the terminal) and one-time backup codes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--replace", action="store_true", help="replace an existing authenticator")

    def handle(self, *args: Any, **options: Any) -> None:
        user = user_named(options["username"])
        existing = TOTPDevice.objects.filter(user=user)
        if existing.exists() and not options["replace"]:
            raise CommandError(
                f"{options['username']} already has an authenticator; use --replace to change it."
            )
        with transaction.atomic():
            existing.delete()
            StaticDevice.objects.filter(user=user, name="backup").delete()
            device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
            backup = StaticDevice.objects.create(user=user, name="backup", confirmed=True)
            codes = [StaticToken.random_token() for _ in range(BACKUP_CODES)]
            StaticToken.objects.bulk_create(StaticToken(device=backup, token=code) for code in codes)
        self.stdout.write(
            f"Scan this with an authenticator app (or enter the URI) for {options['username']}:"
        )
        self.stdout.write(_terminal_qr(device.config_url))
        self.stdout.write(device.config_url)
        self.stdout.write("One-time backup codes (each works once; keep them offline):")
        self.stdout.write("  " + "  ".join(codes))


def _terminal_qr(data: str) -> str:
    code = qrcode.QRCode(border=1)
    code.add_data(data)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()
