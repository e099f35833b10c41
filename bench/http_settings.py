"""Settings for the HTTP benchmarks: exactly the project's, with a URLconf that adds bare endpoints.

BENCH_CONN_MAX_AGE (seconds; unset: the project's setting) is a what-if for the benchmarks
only: persistent database connections instead of one connection per request.
"""

import os

from onboarding.settings import *  # noqa: F403

ROOT_URLCONF = "bench.http_urls"

if os.environ.get("BENCH_CONN_MAX_AGE"):
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ["BENCH_CONN_MAX_AGE"])  # noqa: F405
