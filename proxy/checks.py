"""System check: a PROXY_SECRET that proxy_config could not write into nginx.conf stops start-up,
not the first run of the command."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from proxy.nginx import SECRET_PATTERN


@register("proxy")
def check_proxy_secret(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    secret: str = settings.PROXY_SECRET
    if secret and not SECRET_PATTERN.fullmatch(secret):
        return [
            Error(
                "PROXY_SECRET must be 32 to 512 characters of letters, digits and -_.~+/=.",
                hint="Make one with: openssl rand -base64 48 | tr -d '\\n'",
                id="proxy.E001",
            )
        ]
    return []
