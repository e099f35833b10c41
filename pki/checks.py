"""System checks: a CA that is missing, unreadable, loosely protected or expiring is reported
when any management command (and `manage.py check --deploy`) starts, not at the first request.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register
from django.utils import timezone

from pki.errors import CAKeyError, CANotInitialized
from pki.keystore import keystore

EXPIRY_WARNING_DAYS = 30


@register("pki")
def check_certificate_authority(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    store = keystore()
    if not store.exists():
        # A warning, not an error: `migrate` and `init_ca` must still run on a fresh install.
        return [
            Warning(
                f"No certificate authority in {store.root}.",
                hint="Run `python manage.py init_ca` to create it.",
                id="pki.W001",
            )
        ]
    messages: list[CheckMessage] = [
        Error(problem, hint="Restrict the permissions; the CA key is refused until then.", id="pki.E002")
        for problem in store.problems()
    ]
    if messages:
        return messages
    try:
        authority = store.load()
    except CANotInitialized as exc:
        return [Error(exc.message, hint="Restore both ca.crt and ca.key, or run init_ca.", id="pki.E003")]
    except CAKeyError as exc:
        return [
            Error(exc.message, hint="Check CA_KEY_PASSPHRASE and the files in CA_ROOT_PATH.", id="pki.E004")
        ]
    not_after = authority.certificate.not_valid_after_utc
    now = timezone.now()
    if not_after <= now:
        messages.append(Error(f"The CA certificate expired on {not_after:%Y-%m-%d}.", id="pki.E005"))
    elif not_after - now <= dt.timedelta(days=EXPIRY_WARNING_DAYS):
        messages.append(
            Warning(
                f"The CA certificate expires on {not_after:%Y-%m-%d}, within {EXPIRY_WARNING_DAYS} days.",
                hint="Plan a CA rollover now: devices cannot get certificates valid past the CA.",
                id="pki.W006",
            )
        )
    return messages
