"""Where the CLI finds the portal: flags, then ONBOARD_URL / ONBOARD_TOKEN, then a profile file."""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from onboard_cli.client import CliError

DEFAULT_URL = "http://127.0.0.1:8000"


def profile_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "onboard" / "config.toml"


@dataclass(frozen=True)
class Settings:
    url: str
    token: str | None


def _read_profile(name: str) -> dict[str, str]:
    path = profile_path()
    if not path.exists():
        return {}
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CliError(f"{path} holds a token and has mode {mode:04o}; run: chmod 600 {path}", exit_code=2)
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"{path} cannot be read: {exc}", exit_code=2) from None
    section = profiles.get(name, {})
    return {key: str(value) for key, value in section.items() if key in ("url", "token")}


def resolve(url: str | None, token: str | None, profile: str) -> Settings:
    stored = _read_profile(profile)
    return Settings(
        url=url or os.environ.get("ONBOARD_URL") or stored.get("url") or DEFAULT_URL,
        token=token or os.environ.get("ONBOARD_TOKEN") or stored.get("token"),
    )


def save_profile(name: str, url: str, token: str) -> Path:
    """Write (or replace) one profile; the file is created with mode 0600 and kept so."""
    path = profile_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    profiles: dict[str, dict[str, str]] = {}
    if path.exists():
        profiles = {key: dict(value) for key, value in tomllib.loads(path.read_text()).items()}
    profiles[name] = {"url": url, "token": token}
    lines = []
    for section, values in profiles.items():
        lines.append(f"[{section}]")
        lines += [f'{key} = "{value}"' for key, value in values.items()]
        lines.append("")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines))
    path.chmod(0o600)
    return path
