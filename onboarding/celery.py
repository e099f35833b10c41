"""Celery application. Without CELERY_BROKER_URL, tasks run in-process (see settings)."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onboarding.settings")

app = Celery("onboarding")
# The app of every thread, not only of the one that made it: kernel.tasks sends and runs tasks
# through `celery.current_app` (the broker catch-up runs in a thread of each web process).
app.set_default()
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect  # type: ignore[untyped-decorator]  # celery is untyped
def _catch_up_broker_at_start(sender: Any, **kwargs: Any) -> None:
    """A worker that starts queues one broker catch-up: a crash may have left committed changes
    the broker was never given. Queued, not run here, so the worker is ready at once."""
    from django.conf import settings

    if settings.BROKER_CATCH_UP_AT_START:
        app.send_task("onboarding.catch_up_broker")


@worker_init.connect  # type: ignore[untyped-decorator]  # celery is untyped
@worker_process_init.connect  # type: ignore[untyped-decorator]
def _watch_database_calls(**kwargs: Any) -> None:
    """A worker's database calls are bounded by DATABASE_READ_TIMEOUT_SECONDS, as the web
    process's are (kernel/dbwatch.py): in the main process (solo and thread pools) and in
    each forked pool process, which starts its own watchdog thread."""
    from kernel import dbwatch

    dbwatch.enable()
