"""A Celery worker whose certificate signing stalls, so a test can kill it mid-provisioning.

`python -m tests.support.slow_worker -A onboarding worker ...`: before signing, it writes the file named
by SLOW_WORKER_MARKER and sleeps; the test then kills it with SIGKILL. Only the tests use it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onboarding.settings")
django.setup()

from devices import registration  # noqa: E402 - after Django is set up
from pki.issuance import sign_certificate  # noqa: E402

_sign = sign_certificate


def _stalled_sign(*args: Any, **kwargs: Any) -> Any:
    Path(os.environ["SLOW_WORKER_MARKER"]).write_text(str(os.getpid()))
    time.sleep(600)
    return _sign(*args, **kwargs)


setattr(registration, "sign_certificate", _stalled_sign)  # noqa: B010 - the name the workflow calls

if __name__ == "__main__":
    from celery.__main__ import main

    sys.argv[0] = "celery"
    main()
