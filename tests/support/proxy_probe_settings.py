"""The project's settings with a URLconf that adds one probe of `verified_client_certificate`.

Served only by tests/est/test_proxy.py's gunicorn (DJANGO_SETTINGS_MODULE=tests.support.proxy_probe_settings),
never by the product: it lets the end-to-end test see what the portal believes about a request
that came through nginx, or straight to gunicorn.
"""

from onboarding.settings import *  # noqa: F403

ROOT_URLCONF = "tests.support.proxy_probe_urls"
