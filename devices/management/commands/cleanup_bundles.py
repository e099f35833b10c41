from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from devices.delivery import discard_expired_bundles


class Command(BaseCommand):
    help = (
        "Delete the encrypted bundles whose download links expired unused, and those that revoked "
        "devices left behind when the disk refused to delete them at revocation."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        removed = discard_expired_bundles()
        self.stdout.write(f"Deleted {removed} bundle(s) no link can serve any more.")
