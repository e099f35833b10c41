"""Start-up configuration, exercised the way an operator meets it: `manage.py` in a new process."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.helpers import manage, manage_shell, without_settings_variables


def start_web_server(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import the web server's entry point (what gunicorn does first) in a new process."""
    return subprocess.run(
        [sys.executable, "-c", "import onboarding.wsgi"],
        cwd=ROOT,
        env={**without_settings_variables(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("missing", ["SECRET_KEY", "CA_KEY_PASSPHRASE"])
def test_missing_secret_outside_development_stops_start_up_in_one_sentence(
    tmp_path: Path, missing: str
) -> None:
    env = {"DATA_DIR": str(tmp_path), "SECRET_KEY": "s" * 50, "CA_KEY_PASSPHRASE": "p" * 20}
    del env[missing]
    result = manage("check", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"Configuration error: {missing} is not set: set {missing} or {missing}_FILE "
                     "(only development, DEBUG=true, generates one)."]  # fmt: skip
    assert "Traceback" not in result.stderr


def test_development_generates_secrets_once_with_mode_0600(tmp_path: Path) -> None:
    env = {"DEBUG": "true", "DATA_DIR": str(tmp_path / "data")}
    assert manage("check", env=env).returncode == 0
    generated = {name: (tmp_path / "data" / name).read_text() for name in ("secret_key", "ca_passphrase")}
    for name in generated:
        assert stat.S_IMODE((tmp_path / "data" / name).stat().st_mode) == 0o600
        assert len(generated[name]) >= 40
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert manage("check", env=env).returncode == 0
    assert {name: (tmp_path / "data" / name).read_text() for name in generated} == generated


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("k" * 50 + "\n")
    (tmp_path / "passphrase").write_text("pass-from-file\n")
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY_FILE": str(tmp_path / "secret"),
        "CA_KEY_PASSPHRASE_FILE": str(tmp_path / "passphrase"),
    }
    printed = manage_shell("from django.conf import settings; print(settings.CA_KEY_PASSPHRASE)", env)
    assert printed.strip().splitlines()[-1] == "pass-from-file"


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path), "SECRET_KEY_FILE": str(tmp_path / "absent"), "CA_KEY_PASSPHRASE": "p"}
    result = manage("check", env=env)
    assert result.returncode == 2
    assert f"SECRET_KEY_FILE points at {tmp_path / 'absent'}, which cannot be read" in result.stderr


def test_defaults_follow_data_dir(tmp_path: Path) -> None:
    env = {"DEBUG": "true", "DATA_DIR": str(tmp_path)}
    code = (
        "from django.conf import settings as s; "
        "print(s.CA_ROOT_PATH, s.BROKER_ACL_FILE, s.DATABASES['default']['NAME'], "
        "s.CERT_VALIDITY_DAYS, s.DOWNLOAD_EXPIRY_MINUTES, s.CRL_VALIDITY_HOURS, s.CELERY_TASK_ALWAYS_EAGER)"
    )
    printed = manage_shell(code, env)
    assert printed.split() == [
        str(tmp_path / "certs"), str(tmp_path / "mosquitto.acl"), str(tmp_path / "devices.db"),
        "365", "30", "72", "True",
    ]  # fmt: skip


def test_production_defaults_are_secure(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path), "SECRET_KEY": "s" * 50, "CA_KEY_PASSPHRASE": "p"}
    code = (
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.ALLOWED_HOSTS)"
    )
    printed = manage_shell(code, env)
    assert printed.split() == ["False", "True", "True", "True", "[]"]


def test_web_server_refuses_to_start_with_an_exposed_ca_key(tmp_path: Path) -> None:
    env = {"DEBUG": "true", "DATA_DIR": str(tmp_path)}
    refused = manage("init_ca", "--key-type", "ec-p256", env=env)
    assert refused.returncode == 1 and "run `python manage.py migrate` first" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "certs" / "ca.key").exists()
    assert manage("migrate", env=env).returncode == 0
    assert manage("init_ca", "--key-type", "ec-p256", env=env).returncode == 0
    (tmp_path / "certs" / "ca.key").chmod(0o644)
    result = start_web_server(env)
    assert result.returncode != 0
    assert "Refusing to start" in result.stderr and "chmod 600" in result.stderr


def test_an_unknown_broker_backend_stops_check_at_start_up(tmp_path: Path) -> None:
    """Noticed by `check` (and so by runserver and migrate), not by the first registration after
    it has committed (which then answered 503 for a device that exists)."""
    env = {"DEBUG": "true", "DATA_DIR": str(tmp_path / "data"), "BROKER_BACKEND": "mosquito_acl"}
    result = manage("check", env=env)
    assert result.returncode == 1
    assert "(broker.E001) BROKER_BACKEND 'mosquito_acl' is not one of: mosquitto_acl, mosquitto_dynsec." in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    env["BROKER_BACKEND"] = "mosquitto_dynsec"
    assert "broker.E001" not in manage("check", env=env).stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("broker.backends.acl.NoSuchBackend", "cannot be imported"),
        ("broker.models.AclRule", "is not a broker backend"),
    ],
)
def test_a_bad_dotted_broker_backend_stops_check_at_start_up(
    tmp_path: Path, setting: str, message: str
) -> None:
    """BROKER_BACKEND may be a dotted path (broker.backends): one that does not import, or names
    something that is not a backend, stops `check` just as an unknown name does."""
    env = {"DEBUG": "true", "DATA_DIR": str(tmp_path / "data"), "BROKER_BACKEND": setting}
    result = manage("check", env=env)
    assert result.returncode == 1
    assert f"(broker.E001) BROKER_BACKEND '{setting}' {message}" in result.stderr
    assert "Traceback" not in result.stderr
    env["BROKER_BACKEND"] = "broker.backends.dynsec.MosquittoDynsecBackend"
    assert "broker.E001" not in manage("check", env=env).stderr


def test_a_bad_metrics_network_stops_check_and_the_web_server(tmp_path: Path) -> None:
    """A system check (onboarding/checks.py), not an import-time error: `check`, `runserver` and
    `migrate` report it, and the web server's entry point refuses to start on it."""
    env = {"DEBUG": "true", "DATA_DIR": str(tmp_path / "data"), "METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,ten"}
    result = manage("check", env=env)
    assert result.returncode == 1
    assert (
        "(onboarding.E001) METRICS_ALLOWED_NETWORKS: 'ten' is not a network (write 10.0.0.0/8 or 127.0.0.1)."
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    web = start_web_server(env)
    assert web.returncode != 0
    assert "Refusing to start: METRICS_ALLOWED_NETWORKS: 'ten' is not a network" in web.stderr
    env["METRICS_ALLOWED_NETWORKS"] = "10.0.0.0/8,127.0.0.1"
    assert "onboarding.E001" not in manage("check", env=env).stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_READ_TIMEOUT_SECONDS", "0", "DATABASE_READ_TIMEOUT_SECONDS must be more than 0, not 0.0"),
        ("BROKER_CATCH_UP_SECONDS", "61", "BROKER_CATCH_UP_SECONDS must be between 1 and 60, not 61"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be plain or json, not 'xml'."),
        (
            "SECURE_PROXY_SSL_HEADER",
            "X_FORWARDED_PROTO,https",
            "SECURE_PROXY_SSL_HEADER must be HEADER,VALUE",
        ),
    ],
)
def test_values_that_decide_other_settings_stop_start_up_at_once(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    """Checked while the settings are read (each says why there): every process, workers and
    celery beat included, refuses them in one sentence."""
    result = manage("check", env={"DEBUG": "true", "DATA_DIR": str(tmp_path), variable: value})
    assert result.returncode == 2
    assert f"Configuration error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_smtp_password_may_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "smtp").write_text("smtp-secret\n")
    env = {
        "DEBUG": "true",
        "DATA_DIR": str(tmp_path / "data"),
        "EMAIL_HOST_PASSWORD_FILE": str(tmp_path / "smtp"),
    }
    code = "from django.conf import settings; print(settings.EMAIL_HOST_PASSWORD)"
    printed = manage_shell(code, env)
    assert printed.strip().splitlines()[-1] == "smtp-secret"
