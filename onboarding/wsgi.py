"""WSGI entry point (gunicorn onboarding.wsgi)."""

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onboarding.settings")

application = get_wsgi_application()


def _refuse_an_exposed_ca_key() -> None:
    """A CA key file or directory others can read stops the web server at start-up, not later."""
    from pki.keystore import keystore

    problems = keystore().problems()
    if problems:
        raise ImproperlyConfigured("Refusing to start: " + " ".join(problems))


_refuse_an_exposed_ca_key()
