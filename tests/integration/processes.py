"""Real server and worker processes for integration tests (``app.core.processes`` starts and
stops them; ``free_port`` is re-exported from there)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from app.core.processes import cli, started
from app.core.processes import free_port as free_port
from app.core.processes import stop as stop_group

T = TypeVar("T")


def env_for(settings_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOLOOP_")}
    env.update(settings_env)
    env.setdefault("ANNOLOOP_ENVIRONMENT", "test")
    return env


@contextmanager
def process(
    args: list[str], env: dict[str, str], log: Path, python: str = sys.executable
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m app.cli ARGS``; stop it with SIGTERM (then SIGKILL) afterwards."""
    with started(cli(*args, python=python), env, log, reap_group=False) as proc:
        yield proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    stop_group(proc, timeout, reap_group=False)


def wait_for(
    probe: Callable[[], T | None], timeout: float, what: str, log: Path | None = None
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
