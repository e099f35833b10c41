"""WSGI entry point (gunicorn onboarding.wsgi)."""

import logging
import os
import threading
import time

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onboarding.settings")

application = get_wsgi_application()


def _watch_database_calls() -> None:
    """Each database call of the web process is bounded by DATABASE_READ_TIMEOUT_SECONDS (a
    server frozen under a kept connection answers 503 in time). Here and in Celery workers only:
    migrations and management commands may run long statements."""
    from kernel import dbwatch

    dbwatch.enable()


_watch_database_calls()


def _refuse_an_exposed_ca_key() -> None:
    """A CA key file or directory others can read stops the web server at start-up, not later."""
    from pki.keystore import keystore

    problems = keystore().problems()
    if problems:
        raise ImproperlyConfigured("Refusing to start: " + " ".join(problems))


_refuse_an_exposed_ca_key()


def _refuse_bad_settings() -> None:
    """The settings' system checks (onboarding/checks.py) stop the web server too: gunicorn runs
    no management command, so nothing else would."""
    from django.core import checks

    from onboarding.checks import SETTINGS

    errors = [message.msg for message in checks.run_checks(tags=[SETTINGS]) if message.is_serious()]
    if errors:
        raise ImproperlyConfigured("Refusing to start: " + " ".join(errors))


_refuse_bad_settings()


logger = logging.getLogger("onboarding.wsgi")


def _catch_up_broker() -> None:
    """The broker catch-up of a web process: once at start; without workers (so without celery
    beat) again every BROKER_CATCH_UP_SECONDS. With workers it only asks them, when behind."""
    from django.conf import settings
    from django.db import connection

    from broker.dispatch import catch_up_broker
    from kernel.tasks import tasks_run_in_process

    here = tasks_run_in_process()
    while True:
        try:
            outcome = catch_up_broker(here=here)
            if outcome != "in step":
                logger.info("broker catch-up: %s", outcome)
        except Exception as exc:  # noqa: BLE001 - logged and tried again; it must never stop the server
            logger.error("broker catch-up failed, tried again later: %s", getattr(exc, "message", exc))
        finally:
            connection.close()
        if not here:
            return
        time.sleep(settings.BROKER_CATCH_UP_SECONDS)


def _start_broker_catch_up() -> None:
    """Here, in the web server's entry point (gunicorn workers, runserver), and not in an
    AppConfig.ready hook: manage.py commands, migrations and tests never load this module, so
    they are not slowed; a thread, so the server answers at once."""
    from django.conf import settings

    if settings.BROKER_CATCH_UP_AT_START:
        threading.Thread(target=_catch_up_broker, name="broker-catch-up", daemon=True).start()


_start_broker_catch_up()
