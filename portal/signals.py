"""The session clock starts at sign-in, whichever page (portal or admin) signed the user in."""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest

from portal.middleware import SIGNED_IN_AT, mark_activity


@receiver(user_logged_in)
def start_session_clock(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is not None and hasattr(request, "session"):
        now = time.time()
        request.session[SIGNED_IN_AT] = now
        mark_activity(request, now)
