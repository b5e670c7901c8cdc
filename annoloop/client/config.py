"""Where the CLI finds the server and the token: flags, then the environment
(``ANNOLOOP_URL``, ``ANNOLOOP_TOKEN``), then a TOML file, then the local default.

The file is ``$ANNOLOOP_CONFIG``, else ``$XDG_CONFIG_HOME/annoloop/client.toml`` (``~/.config``
by default)::

    url = "https://annoloop.example.org"
    token = "..."

    [profiles.staging]            # chosen with --profile staging or ANNOLOOP_PROFILE
    url = "https://staging.example.org"
    token = "..."
"""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None
    source: str  # where the token came from, for error messages


def config_path() -> Path:
    if os.environ.get("ANNOLOOP_CONFIG"):
        return Path(os.environ["ANNOLOOP_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "annoloop" / "client.toml"


def read_config(path: Path, profile: str | None) -> dict[str, Any]:
    if not path.is_file():
        if profile:
            raise SystemExit(f"annoloop: profile {profile!r} asked for but {path} does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SystemExit(f"annoloop: {path}: {exc}") from exc
    if data.get("token") and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        print(f"annoloop: warning: {path} holds a token and others can read it", file=sys.stderr)
    if profile:
        profiles = data.get("profiles", {})
        if profile not in profiles:
            raise SystemExit(f"annoloop: {path} has no [profiles.{profile}]")
        return dict(profiles[profile])
    return {k: v for k, v in data.items() if k != "profiles"}


def resolve(url: str | None, token: str | None, config: str | None, profile: str | None) -> Target:
    profile = profile or os.environ.get("ANNOLOOP_PROFILE") or None
    path = Path(config) if config else config_path()
    env_url, env_token = os.environ.get("ANNOLOOP_URL"), os.environ.get("ANNOLOOP_TOKEN")
    # A profile named on purpose beats the environment's default target.
    file = read_config(path, profile)
    if profile:
        env_url, env_token = None, None
    chosen_url = url or env_url or file.get("url") or DEFAULT_URL
    if token:
        return Target(chosen_url, token, "--token")
    if env_token:
        return Target(chosen_url, env_token, "ANNOLOOP_TOKEN")
    if file.get("token"):
        return Target(chosen_url, str(file["token"]), str(path))
    return Target(chosen_url, None, "nowhere")
