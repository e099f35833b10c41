"""The base of every error a workflow reports to a person or a program."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error with a machine-readable code, the HTTP status an API answers with, and a sentence.

    Views turn it into `{"error": {"code", "message", ...details}}` and commands into one line
    on stderr; neither needs to know which step failed.
    """

    code = "error"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        #: Extra facts a client can act on (for example the id of an existing device).
        self.details = details
