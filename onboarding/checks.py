"""System checks of the project's own settings, those no app owns: a bad value stops `check`,
`runserver`, `migrate` and every other management command with one clear message, and the web
server at start-up (onboarding/wsgi.py runs these before it serves).

Registered when the project package is imported (onboarding/__init__.py), which every process
does first: it holds the settings module. Settings themselves only read values; validations that
decide another setting stay in onboarding/settings.py, each saying why.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

#: The tag of these checks (`manage.py check --tag settings`).
SETTINGS = "settings"


@register(SETTINGS)
def check_metrics_networks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for network in settings.METRICS_ALLOWED_NETWORKS:
        try:
            ipaddress.ip_network(network)
        except ValueError:
            messages.append(
                Error(
                    f"METRICS_ALLOWED_NETWORKS: '{network}' is not a network "
                    "(write 10.0.0.0/8 or 127.0.0.1).",
                    id="onboarding.E001",
                )
            )
    return messages
