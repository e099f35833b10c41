"""The shared cache (Redis in production, CACHE_URL=redis://…) whose outage is an error with a code.

Django's Redis cache lets redis-py's errors through: the API throttles and the failed-token
throttle (accounts/authentication.py) read it on every API request, so a Redis that was down or
frozen answered 500. Here every cache call that fails on Redis raises CacheUnavailable: the API
answers 503 `cache_unavailable`, and so does any page (api.handlers.server_error).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import redis
from django.core.cache.backends import redis as django_redis

from kernel.errors import ServiceError


class CacheUnavailable(ServiceError):
    code = "cache_unavailable"
    status = 503


def _raising_cache_unavailable(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise CacheUnavailable(f"The cache (Redis) does not answer: {type(exc).__name__}: {exc}") from exc

    return call


class RedisCache(django_redis.RedisCache):
    """Django's RedisCache; a Redis that is down or frozen (bounded by REDIS_CONNECT_TIMEOUT_SECONDS
    and REDIS_TIMEOUT_SECONDS) raises CacheUnavailable instead of redis-py's errors."""


# Every method that talks to Redis (the others, such as get_or_set and decr, call these).
for _name in ("add", "get", "set", "touch", "delete", "get_many", "has_key", "incr", "set_many",
              "delete_many", "clear"):  # fmt: skip
    setattr(RedisCache, _name, _raising_cache_unavailable(getattr(django_redis.RedisCache, _name)))
