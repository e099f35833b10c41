"""Log output: one JSON object per line for production (LOG_FORMAT=json), and a filter that
scrubs anything shaped like a secret from every line, whichever format is used.

The code never logs a secret on purpose; the filter is the second line of defence for what
others log on our behalf: Django logs the path of every 4xx answer ("Gone: /download/<token>"),
and an exception message may quote what it choked on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

# Attributes every LogRecord has; anything else was passed through `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}

REDACTED = "[redacted]"
_PATTERNS = (
    # PEM private keys, encrypted or not (RFC 7468 labels).
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)", re.S),
     "[private key redacted]"),
    # One-time download links: the token is the credential.
    (re.compile(r"(/download/)[^\s/?#\"']+"), r"\1" + REDACTED),
    # API tokens (accounts.tokens: "iotp_" and 256 random bits) and Authorization headers.
    (re.compile(r"\biotp_[A-Za-z0-9_\-]+"), "iotp_" + REDACTED),
    (re.compile(r"((?:Token|Bearer)\s+)[A-Za-z0-9_\-.~+/=]{8,}"), r"\1" + REDACTED),
)  # fmt: skip


def redact(text: str, literals: tuple[str, ...] = ()) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    for literal in literals:
        if literal:
            text = text.replace(literal, REDACTED)
    return text


def _configured_secrets() -> tuple[str, ...]:
    """The settings' own secrets, looked up lazily (logging is configured before settings load)."""
    try:
        from django.conf import settings

        return tuple(
            str(getattr(settings, name, "") or "")
            for name in ("SECRET_KEY", "CA_KEY_PASSPHRASE", "METRICS_TOKEN", "EMAIL_HOST_PASSWORD")
        )
    except Exception:  # noqa: BLE001 - settings not ready: the patterns still apply
        return ()


class RedactSecrets(logging.Filter):
    """Rewrites the record's message (arguments merged in) and exception text without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        literals = _configured_secrets()
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = redact(message, literals), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, literals)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Extras (Django passes the request object) are scrubbed too: the whole line is.
        return redact(json.dumps(entry, default=str, ensure_ascii=False), _configured_secrets())
