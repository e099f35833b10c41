"""Shared fixtures: a session-wide test CA (EC P-256 for speed) and per-test fresh CAs, a real
Mosquitto, and a real browser (Debian's chromium) on the live server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test.utils import override_settings

from pki.authority import initialize_ca
from pki.keystore import CertificateAuthority, forget_loaded_ca, get_ca
from pki.profiles import KeyType


def pytest_configure(config: pytest.Config) -> None:
    # Django's advice for test suites: a fast password hasher. Production keeps Django's
    # PBKDF2 (1,000,000 rounds, about 0.3 s per hash here), which every user the tests make
    # paid for. The slow hashers stay listed, so any hash they made still verifies.
    # override_settings (not an assignment) tells Django's cached hasher list to reset.
    fast_first = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    override_settings(PASSWORD_HASHERS=fast_first).enable()


@pytest.fixture(scope="session")
def session_ca_root(tmp_path_factory: pytest.TempPathFactory, django_db_setup, django_db_blocker) -> Path:
    """One EC P-256 CA for the whole run, in its own directory."""
    root = tmp_path_factory.mktemp("session-ca") / "certs"
    with override_settings(CA_ROOT_PATH=root), django_db_blocker.unblock():
        forget_loaded_ca()
        initialize_ca(common_name="Test Session CA", key_type=KeyType.EC_P256)
    forget_loaded_ca()
    return root


@pytest.fixture
def ca(session_ca_root: Path, settings, db) -> Iterator[CertificateAuthority]:
    """The session CA, active for this test (database access included)."""
    settings.CA_ROOT_PATH = session_ca_root
    forget_loaded_ca()
    yield get_ca()
    forget_loaded_ca()


@pytest.fixture
def fresh_ca_root(tmp_path: Path, settings) -> Iterator[Path]:
    """An empty CA_ROOT_PATH for tests that create a CA of their own."""
    root = tmp_path / "certs"
    settings.CA_ROOT_PATH = root
    forget_loaded_ca()
    yield root
    forget_loaded_ca()


@pytest.fixture
def broker_files(settings, tmp_path: Path) -> None:
    """The broker's ACL, CRL copy and probe identities in this test's own directory."""
    settings.BROKER_ACL_FILE = tmp_path / "mosquitto.acl"
    settings.BROKER_CRL_FILE = tmp_path / "mosquitto-crl.pem"
    settings.BROKER_PROBE_DIR = tmp_path / "probe"


@pytest.fixture
def crl_file() -> Path:
    return Path(settings.CA_ROOT_PATH) / "crl.pem"


# --- Users, roles and API clients ---


@pytest.fixture
def make_user(db):
    from django.contrib.auth.models import Group, User

    def make(username: str, role: str | None = None) -> User:
        from tests.support.portal import restore_roles

        user = User.objects.create_user(username=username, password="a-long-test-password")
        if role:
            if not Group.objects.filter(name=role).exists():
                restore_roles()  # an earlier transactional test's flush removed the role groups
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def token_client(make_user):
    """An APIClient authenticated with a real API token of a user in `role`."""
    from rest_framework.test import APIClient

    from accounts.services import create_api_token

    def make(role: str | None, username: str | None = None) -> APIClient:
        user = make_user(username or f"{(role or 'norole').lower()}-user", role)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {create_api_token(user).value}")
        return client

    return make


@pytest.fixture
def operator_api(ca, token_client):
    return token_client("Operators")


@pytest.fixture
def superuser_api(ca: CertificateAuthority) -> Any:
    """A superuser's token client: transactional tests flush the role groups the migrations made."""
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    from accounts.services import create_api_token

    user = User.objects.create_superuser("provisioner", password="a-long-test-password")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {create_api_token(user).value}")
    return client


def _point_app(broker_url: str, eager: bool) -> None:
    from onboarding.celery import app

    app.conf.broker_url = broker_url
    app.conf.task_always_eager = eager
    # Connections are pooled per app: drop them so the next message uses the new URL.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def use_queue(settings: Any, broker_files: None) -> Iterator[Callable[[str], None]]:
    """Make this process a web process with workers: tasks go to a real Redis."""
    from onboarding.celery import app

    saved = (app.conf.broker_url, app.conf.task_always_eager)

    def use(url: str) -> None:
        settings.CELERY_TASK_ALWAYS_EAGER = False
        settings.CELERY_BROKER_URL = url
        _point_app(url, eager=False)

    yield use
    _point_app(*saved)


# --- Portal clients, signed in with both factors ---


@pytest.fixture
def operator(ca: CertificateAuthority, make_user: Any, verified_login: Any) -> Any:
    from tests.support.portal import signed_in

    return signed_in(make_user, verified_login, "Operators", "olga")


@pytest.fixture
def auditor(ca: CertificateAuthority, make_user: Any, verified_login: Any) -> Any:
    from tests.support.portal import signed_in

    return signed_in(make_user, verified_login, "Auditors", "arthur")


# --- A real Mosquitto started with the configuration `mosquitto_config` generates ---


@pytest.fixture(params=["mosquitto_acl", "mosquitto_dynsec"])
def mosquitto(request, ca, settings, tmp_path):
    """Both backends run every broker test (a test may narrow this with indirect parametrize)."""
    from tests.support.mosquitto import configured_broker, stop_mosquitto

    broker = configured_broker(settings, tmp_path, request.param)
    yield broker
    stop_mosquitto(broker)


@pytest.fixture
def verified_login():
    """Log a client in with a confirmed TOTP device, as after a real two-factor sign-in."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    def login(client, user):
        device = TOTPDevice.objects.create(user=user, name="test", confirmed=True)
        client.force_login(user)
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
        return client

    return login


# --- A real browser: Playwright driving Debian's headless chromium against the live server ---

CHROMIUM = Path("/usr/lib/chromium/chromium")
# Generous: a loaded 2-core machine runs the browser, the live server and the test side by side.
BROWSER_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():  # a missing browser fails the run; it never skips the tests
        pytest.fail(f"Debian's chromium is needed at {CHROMIUM}: apt-get install chromium (`make test` does)")
    # Playwright's sync API keeps an asyncio loop in this thread; Django then refuses database
    # calls from it unless told that this thread only looks like async code (Playwright's advice).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield from _launched(sync_playwright)
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _launched(sync_playwright: Any) -> Iterator[Any]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield instance
        instance.close()


@pytest.fixture
def portal(live_server: Any, session_ca_root: Path, settings: Any, broker_files: None) -> Iterator[str]:
    """The live server's URL, with the session CA and the role groups (a transactional
    test's flush removes them)."""
    from tests.support.portal import restore_roles

    settings.CA_ROOT_PATH = session_ca_root
    settings.PORTAL_URL = live_server.url
    forget_loaded_ca()
    restore_roles()
    yield live_server.url
    forget_loaded_ca()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    context.set_default_navigation_timeout(BROWSER_TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    context.close()
