"""Issue #16, item 3: the image installs requirements.txt alone, so the Celery path must work
with nothing the test tools bring along (kombu's Redis transport imports `packaging`, which
only pytest and friends had installed here).

The test builds a virtualenv from requirements.txt (and the project, --no-deps) as the
Dockerfile does, kept under the pytest cache keyed by the hash of what it was built from, and
registers a device through the API in it with CELERY_BROKER_URL and the result backend on a
real Redis of the test's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.redis_server import RedisServer, own_redis

__all__ = ["own_redis"]


REGISTER_THROUGH_THE_API = """
import json
import os
import sys
if os.environ.get("TEST_WITHOUT_PACKAGING"):
    sys.modules["packaging"] = None  # an install that lacks it: importing it raises ImportError
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from accounts.services import create_api_token

call_command("migrate", verbosity=0)
call_command("init_ca", verbosity=0)
user = User.objects.create_superuser("image", password="a-long-test-password")
token = create_api_token(user).value
response = Client(raise_request_exception=False).post(
    "/register", {"name": "from-the-image", "hardware_id": "HW-IMAGE"},
    content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}",
)
from devices.models import Device
print(json.dumps({"status": response.status_code, "body": response.content.decode(),
                  "devices": Device.objects.count()}))
"""


def runtime_venv(cache_root: Path) -> Path:
    """A venv with requirements.txt and the project only, built once per requirements.txt."""
    key = hashlib.sha256(
        (ROOT / "requirements.txt").read_bytes() + (ROOT / "pyproject.toml").read_bytes()
    ).hexdigest()[:16]
    venv = cache_root / f"runtime-venv-{key}"
    if (venv / "complete").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.txt")], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    (venv / "complete").touch()
    return venv


@pytest.fixture
def venv_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("runtime-venvs")) if cache is not None else tmp_path_factory.mktemp("venvs")


def register_in(
    venv: Path, redis_url: str, data_dir: Path, *, without_packaging: bool = False
) -> dict[str, Any]:
    """Register a device through the API in a process of `venv`, with the task queue and the
    result backend on `redis_url`; the answer's status and body, and how many devices exist."""
    keep = {"PATH", "HOME", "LANG", "TMPDIR"}
    env = {key: value for key, value in os.environ.items() if key in keep} | {
        "DATA_DIR": str(data_dir),
        "SECRET_KEY": "runtime-requirements-test-secret-key-0123456789",
        "CA_KEY_PASSPHRASE": "runtime-requirements-test",
        "ALLOWED_HOSTS": "testserver",
        "SECURE_SSL_REDIRECT": "false",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
    }
    if without_packaging:
        env["TEST_WITHOUT_PACKAGING"] = "1"
    finished = subprocess.run(
        [str(venv / "bin" / "python"), "manage.py", "shell", "-c", REGISTER_THROUGH_THE_API],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    answer: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    answer["stderr"] = finished.stderr[-3000:]
    return answer


@pytest.mark.timeout(900)  # the first build installs every requirement (from pip's cache)
def test_a_registration_goes_through_celery_with_requirements_txt_alone(
    venv_cache: Path, own_redis: RedisServer, tmp_path: Path
) -> None:
    answer = register_in(runtime_venv(venv_cache), own_redis.url, tmp_path / "data")

    assert answer["status"] == 202, answer["stderr"]
    assert json.loads(answer["body"])["status"] == "pending"
    assert [task["headers"]["task"] for task in own_redis.queued_tasks()] == ["onboarding.provision_device"]


@pytest.mark.timeout(900)
def test_a_broken_install_that_cannot_send_tasks_keeps_no_pending_device(
    venv_cache: Path, own_redis: RedisServer, tmp_path: Path
) -> None:
    """The issue's second symptom: the failed send left a pending device holding its hardware id."""
    answer = register_in(runtime_venv(venv_cache), own_redis.url, tmp_path / "data", without_packaging=True)

    assert answer["status"] == 503, answer["stderr"]
    assert json.loads(answer["body"])["error"]["code"] == "task_queue_unavailable"
    assert answer["devices"] == 0
    assert own_redis.queued_tasks() == []
