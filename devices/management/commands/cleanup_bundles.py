from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from devices.delivery import discard_expired_bundles


class Command(BaseCommand):
    help = "Delete the encrypted bundles whose download links expired unused."

    def handle(self, *args: Any, **options: Any) -> None:
        removed = discard_expired_bundles()
        self.stdout.write(f"Deleted {removed} expired bundle(s).")
