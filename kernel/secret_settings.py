"""Secrets for the settings: from the environment (NAME), from a file it names (NAME_FILE, a
Docker or Kubernetes secret), or, in development only, generated once and kept with mode 0600.
A secret that is missing or unreadable stops start-up with one sentence saying what to set.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured


def private_dir(path: Path) -> Path:
    """The directory, created with mode 0700 when it does not exist yet."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def read_secret_file(path: str, name: str) -> str:
    """The stripped content of the file NAME_FILE points at; unreadable or empty stops start-up."""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{name}_FILE points at {path}, which cannot be read ({exc.strerror})."
        ) from None
    if not value:
        raise ImproperlyConfigured(f"{name}_FILE points at {path}, which is empty.")
    return value


def generated_secret(path: Path) -> str:
    """Create once, then reuse, a random secret in `path` (mode 0600, its directory 0700)."""
    private_dir(path.parent)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def secret(env: environ.Env, name: str, *, generated: Path | None) -> str:
    """A secret from NAME, or from the file named by NAME_FILE, or (`generated` given: in
    development) created once in that file."""
    value = str(env.str(name, default=""))
    if value:
        return value
    file_path = env.str(f"{name}_FILE", default="")
    if file_path:
        return read_secret_file(file_path, name)
    if generated is not None:
        return generated_secret(generated)
    raise ImproperlyConfigured(
        f"{name} is not set: set {name} or {name}_FILE (only development, DEBUG=true, generates one)."
    )


def optional_secret(env: environ.Env, name: str) -> str:
    """A secret from NAME or the file named by NAME_FILE; empty when neither is set."""
    file_path = env.str(f"{name}_FILE", default="")
    return str(env.str(name, default="")) or (read_secret_file(file_path, name) if file_path else "")
