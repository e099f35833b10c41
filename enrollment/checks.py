"""System checks of the enrolment settings: a code that expires at once, or a lockout after no
failure at all, stops start-up instead of refusing every device later."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

MINIMUMS = {
    "ENROLLMENT_CODE_DAYS": 1,
    "ENROLLMENT_CODE_MAX_FAILURES": 1,
    "ENROLLMENT_CODE_LOCKOUT_MINUTES": 1,
}


@register("enrollment")
def check_enrollment_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(
            f"{name} is {getattr(settings, name)}; it must be at least {minimum}.",
            hint=f"Set {name} in the environment to a whole number of at least {minimum}.",
            id=f"enrollment.E00{number}",
        )
        for number, (name, minimum) in enumerate(MINIMUMS.items(), start=1)
        if getattr(settings, name) < minimum
    ]
