"""WSGI entry point (gunicorn onboarding.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onboarding.settings")

application = get_wsgi_application()
