from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from devices.renewal import revoke_superseded_certificates


class Command(BaseCommand):
    help = (
        "Revoke (reason superseded) the device certificates that a renewal replaced more than "
        "RENEWAL_GRACE_HOURS ago, publish the CRL and bring the broker in step. Celery beat runs "
        "it every 10 minutes; run it from cron where there are no workers."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        revoked = revoke_superseded_certificates()
        self.stdout.write(f"Revoked {revoked} superseded certificate(s).")
