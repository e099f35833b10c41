"""System checks of the broker settings: a misconfiguration stops `check`, `runserver`, `migrate`
and the web server at start-up, not the first registration after it has committed."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register

from broker.services import BrokerSyncError, get_backend


@register("broker")
def check_broker_backend(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        get_backend()
    except BrokerSyncError as exc:
        return [
            Error(
                exc.message,
                hint="Set BROKER_BACKEND to mosquitto_acl (the ACL file) or mosquitto_dynsec "
                "(the dynamic-security plugin).",
                id="broker.E001",
            )
        ]
    return []
