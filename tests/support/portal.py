"""Helpers shared by the portal tests (plain functions; the fixtures are in conftest.py)."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

PASSWORD = "a-long-test-password"


def current_code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


def signed_in(
    make_user: Any, verified_login: Any, role: str | None, username: str | None = None, **flags: Any
) -> Client:
    """A client signed in with password and second factor, as a user in `role`."""
    user: User = make_user(username or f"{(role or 'superuser').lower()}-person", role)
    for name, value in flags.items():
        setattr(user, name, value)
    user.save()
    return verified_login(Client(), user)  # type: ignore[no-any-return]


def csv_upload(text: str, name: str = "devices.csv") -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden field {name}"
    return found.group(1)


def hidden_text(html: str, testid: str) -> str:
    """The text of the element marked `data-testid="<testid>"`."""
    found = re.search(rf'data-testid="{testid}">([^<]+)<', html)
    assert found, testid
    return found.group(1)


def register_through_form(client: Client, **fields: Any) -> Any:
    """Submit the portal's register form (an EC key unless told) and hand back the response."""
    page = client.get("/portal/devices/register/")
    assert page.status_code == 200
    data = {"name": "boiler-7", "hardware_id": "", "key_type": "ec-p256", "metadata": "", "csr": ""}
    data.update(fields)
    data["submission"] = hidden(page.content.decode(), "submission")
    return client.post("/portal/devices/register/", data)


def restore_roles() -> None:
    """Recreate the role groups a transactional test's flush removed (they come from data
    migrations; permissions and content types come back by themselves after a flush)."""
    import importlib

    from django.contrib.auth.models import Group, Permission

    grants: dict[str, set[str]] = {}
    for name in (
        "accounts.migrations.0002_roles",
        "accounts.migrations.0003_download_history_roles",
        "accounts.migrations.0004_audit_roles",
        "accounts.migrations.0005_history_roles",
        "accounts.migrations.0008_token_roles",
        "enrollment.migrations.0002_roles",
    ):
        module = importlib.import_module(name)
        for role, names in getattr(module, "ROLE_PERMISSIONS", getattr(module, "GRANTS", {})).items():
            grants.setdefault(role, set()).update(names)
    for role, names in grants.items():
        group, _ = Group.objects.get_or_create(name=role)
        for qualified in names:
            app_label, codename = qualified.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


# --- In a real browser (Playwright page) ---


def staff(username: str, role: str | None, *, enrolled: bool = True, **flags: Any) -> Any:
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username=username, password=PASSWORD, **flags)
    if role:
        user.groups.add(Group.objects.get(name=role))
    if enrolled:
        call_command("enroll_totp", username, stdout=StringIO())
    return user


def totp_for(user: Any) -> str:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return current_code(TOTPDevice.objects.get(user=user, confirmed=True))


def password_step(page: Any, url: str, username: str) -> None:
    page.goto(f"{url}/portal/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()


def sign_in(page: Any, url: str, user: Any) -> None:
    password_step(page, url, user.username)
    page.wait_for_url(re.compile(r"/portal/login/verify/$"))
    page.get_by_label("Authentication code").fill(totp_for(user))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/portal/$"))
