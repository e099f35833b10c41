"""System checks of the broker settings: a misconfiguration stops `check`, `runserver`, `migrate`
and the web server at start-up, not the first registration after it has committed."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from broker.backends import backend_class
from broker.errors import BrokerSyncError


@register("broker")
def check_broker_backend(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """BROKER_BACKEND must name a backend the registry loads (broker.backends)."""
    try:
        backend_class(settings.BROKER_BACKEND)
    except BrokerSyncError as exc:
        return [
            Error(
                exc.message,
                hint="Set BROKER_BACKEND to mosquitto_acl (the ACL file), mosquitto_dynsec "
                "(the dynamic-security plugin) or the dotted path of a broker.backends.BrokerBackend "
                "subclass.",
                id="broker.E001",
            )
        ]
    return []
