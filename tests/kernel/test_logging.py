"""Log output: the JSON format, and no secret in any line of a whole device's life."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.test import APIClient

from accounts.services import create_api_token
from kernel.logs import JsonFormatter, RedactSecrets, redact
from pki.keystore import CertificateAuthority


def test_logging_settings_use_the_filter_and_the_chosen_format() -> None:
    config: dict[str, Any] = django_settings.LOGGING
    handler = config["handlers"]["console"]
    assert handler["filters"] == ["redact_secrets"]
    assert handler["formatter"] == django_settings.LOG_FORMAT
    assert config["formatters"]["json"] == {"()": "kernel.logs.JsonFormatter"}


def test_json_lines_carry_level_logger_message_extras_and_exception() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("devices", logging.WARNING, __file__, 1, "revoked %s", ("dev-1",), None)
    record.device_id = "dev-1"
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "WARNING" and entry["logger"] == "devices"
    assert entry["message"] == "revoked dev-1" and entry["device_id"] == "dev-1"
    assert entry["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(formatter.format(failed))["exception"]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Gone: /download/AbC_dEf-123456", "AbC_dEf-123456"),
        ("Authorization: Token iotp_SeCrEt-Value_0123", "SeCrEt-Value_0123"),
        ("header Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----", "MIIEvQIBADANBg"),
        ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkq\n", "MIIFHDBOBgkq"),
    ],
)
def test_redaction_patterns(text: str, secret: str) -> None:
    assert secret not in redact(text)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every logger at DEBUG into the handler production uses (JSON, redacting filter), SQL
    included: what an operator with LOG_LEVEL=DEBUG and LOG_FORMAT=json would keep."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    levels = {logger.name: logger.level for logger in loggers if isinstance(logger, logging.Logger)}
    root.addHandler(handler)
    for logger in loggers:
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.DEBUG)
            logger.disabled = False
    connection.force_debug_cursor = True
    try:
        yield stream
    finally:
        connection.force_debug_cursor = False
        root.removeHandler(handler)
        for logger in loggers:
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels[logger.name])


def test_a_whole_device_life_logs_no_secret(
    ca: CertificateAuthority, make_user: Any, captured_logs: io.StringIO, settings: Any, tmp_path: Path
) -> None:
    settings.BROKER_ACL_FILE = tmp_path / "mosquitto.acl"
    settings.BROKER_CRL_FILE = tmp_path / "mosquitto-crl.pem"
    user = make_user("logger-operator", "Operators")
    token = create_api_token(user).value
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    registered = api.post("/register", {"name": "log-probe", "key_type": "rsa2048"}, format="json")
    assert registered.status_code == 201, registered.content
    body = registered.json()
    download_path = urlsplit(body["download_url"]).path
    download_token = download_path.rsplit("/", 1)[1]
    first = api.get(download_path)
    assert first.status_code == 200
    again = api.get(download_path)  # refused: Django logs the path of every 4xx
    assert again.status_code == 410
    assert api.get(f"/device/{body['id']}").status_code == 200
    assert api.post(f"/revoke/{body['id']}", {"reason": "keyCompromise"}, format="json").status_code == 200
    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION=f"Token {token}x")
    assert bad_token.get(f"/device/{body['id']}").status_code == 401
    logging.getLogger("test").error("a failure quoting %s", f"Token {token} and /download/{download_token}")

    output = captured_logs.getvalue()
    lines = output.splitlines()
    assert len(lines) > 20, "the flow should have logged (SQL at DEBUG at least)"
    for line in lines:
        json.loads(line)
    secrets = {
        "bundle password": body["bundle_password"],
        "API token": token,
        "API token body": token.split("_", 1)[1],
        "download token": download_token,
        "CA passphrase": settings.CA_KEY_PASSPHRASE,
        "SECRET_KEY": settings.SECRET_KEY,
    }
    for what, secret in secrets.items():
        assert secret not in output, f"the {what} is in the logs"
    assert "PRIVATE KEY-----" not in output
    assert "/download/[redacted]" in output  # the 4xx line and our own line were scrubbed, not lost
