"""Running tasks: the one place that decides "in this process or on a worker", that enqueues,
and the one error it raises.

Tasks are named, not imported (`run_task("onboarding.provision_device", ...)`), so a workflow
never imports the tasks module that wraps it: the tasks import the workflows, not the reverse.

Every call to Redis here is bounded (REDIS_CONNECT_TIMEOUT_SECONDS, REDIS_TIMEOUT_SECONDS, and
the Celery publish and result-backend retry policies in settings), so a queue that is stopped
or frozen costs the caller a few seconds and `TaskQueueUnavailable`, never a hang or a 500.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from kombu.exceptions import OperationalError as KombuOperationalError

from kernel.errors import ServiceError

logger = logging.getLogger(__name__)

#: What sending a task raises when Redis cannot be reached or does not answer in time: kombu's
#: connection errors for the broker, redis-py's for the result backend and the marker client,
#: OSError for sockets, and the RuntimeError Celery's Redis result backend raises once its
#: reconnection attempts are used up ("retry limit exceeded").
QUEUE_ERRORS: tuple[type[Exception], ...] = (
    KombuOperationalError,
    redis.RedisError,
    OSError,
    RuntimeError,
)


class TaskQueueUnavailable(ServiceError):
    code = "task_queue_unavailable"
    status = 503


def tasks_run_in_process() -> bool:
    """True without a task queue (development, `make run`): everything happens in the request."""
    return bool(settings.CELERY_TASK_ALWAYS_EAGER)


def _registered(name: str) -> Any:
    """The task called `name`, importing the apps' task modules first if none has been yet (a
    web process imports them only when it runs one itself)."""
    if name not in current_app.tasks:
        current_app.loader.import_default_modules()
    return current_app.tasks[name]


def run_task(
    name: str,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    countdown: float | None = None,
    undo: Callable[[], str],
) -> None:
    """Run the task called `name`: here and now without a task queue (`tasks_run_in_process`),
    else sent to the workers by name. If it cannot be run or sent, `undo` takes back what the
    caller did for it and says what that leaves ("the device was not registered ..."), and
    TaskQueueUnavailable tells the caller so."""
    try:
        if tasks_run_in_process():
            # Celery's eager mode: retries run at once, errors propagate (CELERY_TASK_EAGER_PROPAGATES).
            _registered(name).apply(args=list(args), kwargs=dict(kwargs or {}))
        else:
            current_app.send_task(name, args=list(args), kwargs=dict(kwargs or {}), countdown=countdown)
    except Exception as exc:
        # Whatever stops the message (an outage, or a broken install such as a module kombu
        # cannot import), nothing may stay behind half-done, so every failure is undone.
        if isinstance(exc, QUEUE_ERRORS):
            logger.error("task queue unreachable for %s (%s: %s)", name, type(exc).__name__, exc)
        else:
            logger.exception("sending %s failed unexpectedly", name)
        outcome = undo()
        raise TaskQueueUnavailable(
            f"The task queue cannot be reached, so {outcome}. Try again shortly; /health shows the "
            "state of the task queue."
        ) from exc


@functools.cache
def _client(url: str) -> redis.Redis:
    """One client (and connection pool) per Redis URL for the process, not one per call."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
    )


def queue_redis() -> redis.Redis:
    """A plain Redis client on the task queue's Redis (for markers beside the queue)."""
    return _client(settings.CELERY_BROKER_URL)
