"""System checks of the renewal settings: a window that never opens (or is always open by
mistake of sign) and a negative grace stop start-up instead of refusing every renewal later."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register


@register("devices")
def check_renewal_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    percent = settings.RENEWAL_WINDOW_PERCENT
    if not 1 <= percent <= 100:
        errors.append(
            Error(
                f"RENEWAL_WINDOW_PERCENT is {percent}; it must be between 1 and 100.",
                hint="The share of a certificate's lifetime, before its expiry, in which a device may "
                "renew (33: the last third).",
                id="devices.E001",
            )
        )
    grace = settings.RENEWAL_GRACE_HOURS
    if grace < 0:
        errors.append(
            Error(
                f"RENEWAL_GRACE_HOURS is {grace}; it must be 0 or more.",
                hint="Hours a renewed device's previous certificate stays valid (0: revoked at once).",
                id="devices.E002",
            )
        )
    return errors
