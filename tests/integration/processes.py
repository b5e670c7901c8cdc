"""Real server and worker processes for integration tests (``app.core.processes`` starts and
stops them; ``free_port`` is re-exported from there)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app.core.processes import cli, started
from app.core.processes import free_port as free_port
from app.core.processes import stop as stop_group
from app.supervise import PARENT_ENV

T = TypeVar("T")


def env_for(settings_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOLOOP_")}
    env.update(settings_env)
    env.setdefault("ANNOLOOP_ENVIRONMENT", "test")
    # One torch thread: a 2-thread worker beside pytest (and the API, the browser) on a
    # 2-core CI machine thrashed, 13x slower (147 s against 11 s alone).
    env.setdefault("OMP_NUM_THREADS", "1")
    # A worker started here gets SIGTERM if pytest dies without stopping it (a CI timeout's
    # kill): ``die_with_parent``, which ``annoloop up`` uses for its own worker.
    env.setdefault(PARENT_ENV, str(os.getpid()))
    return env


@dataclass(frozen=True)
class Spawned:
    pgid: int
    argv: str
    log: Path


# Every process group ``process`` started: the session-end guard in tests/conftest.py looks
# for what is left of them (a leader's orphaned pool child keeps the group's id).
SPAWNED: list[Spawned] = []


@contextmanager
def process(
    args: list[str],
    env: dict[str, str],
    log: Path,
    python: str = sys.executable,
    *,
    reap_group: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m app.cli ARGS`` in a process group of its own; afterwards SIGTERM the
    group, SIGKILL it after 30 s, and SIGKILL what is left of it once the leader is gone, also
    when the test failed. ``reap_group=False`` only where the test checks that the leader
    stopped its children itself (it must ``reap`` the group after its check)."""
    with started(cli(*args, python=python), env, log, reap_group=reap_group) as proc:
        SPAWNED.append(Spawned(proc.pid, " ".join(args), log))
        yield proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    stop_group(proc, timeout)


def reap(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of ``proc``'s process group."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def leftovers() -> list[tuple[int, Spawned]]:
    """Live processes (pid, what started them) in the groups ``process`` started."""
    groups = {s.pgid: s for s in SPAWNED}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgid = fields[0], int(fields[2])
        if pgid in groups and state != "Z":
            found.append((int(entry.name), groups[pgid]))
    return found


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
