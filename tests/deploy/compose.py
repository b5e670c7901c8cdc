"""Reading docker-compose.yml the way ``docker compose`` does, enough to run its services'
commands natively: ``${VAR}`` interpolation, YAML anchors/merge keys, env files, volumes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# $$ | ${NAME} | ${NAME:-default} | ${NAME-default} | ${NAME:?error} | ${NAME?error}
_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


class MissingVariable(KeyError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; comments and blank lines skipped (compose's .env syntax, minus
    quoting, which .env.example does not use)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        current = variables.get(name)
        empty = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else str(current)
        if op in (":?", "?"):
            if empty:
                raise MissingVariable(f"{name}: {arg}")
            return str(current)
        return current or ""

    return _VARIABLE.sub(one, value)


def variable_names() -> set[str]:
    """Every variable the compose file interpolates."""
    return {m.group("name") for m in _VARIABLE.finditer(COMPOSE_FILE.read_text()) if m["name"]}


def load(variables: dict[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(raw, dict)
    # Top-level x-* blocks are only anchors; compose does not interpolate them on their own.
    return {k: interpolate(v, variables) for k, v in raw.items() if not k.startswith("x-")}


@dataclass
class Service:
    name: str
    command: list[str]
    environment: dict[str, str]
    volumes: dict[str, str] = field(default_factory=dict)  # volume name -> container path
    ports: dict[int, str] = field(default_factory=dict)  # container port -> host spec


def service(compose: dict[str, Any], name: str, env_file_values: dict[str, str]) -> Service:
    spec = compose["services"][name]
    environment: dict[str, str] = {}
    if spec.get("env_file"):
        environment.update(env_file_values)  # the .env handed to the container as it is
    environment.update({k: str(v) for k, v in (spec.get("environment") or {}).items()})
    volumes = {}
    for entry in spec.get("volumes") or []:
        source, _, target = str(entry).partition(":")
        volumes[source] = target.split(":")[0]
    ports = {}
    for entry in spec.get("ports") or []:
        host, _, container = str(entry).rpartition(":")
        ports[int(container)] = host
    command = spec["command"]
    assert isinstance(command, list), f"{name}: use the exec form for command"
    return Service(name, [str(c) for c in command], environment, volumes, ports)
