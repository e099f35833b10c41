from onboarding import checks  # noqa: F401  (registers the settings' system checks)
from onboarding.celery import app as celery_app

__all__ = ["celery_app"]
