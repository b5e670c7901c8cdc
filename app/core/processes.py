"""Starting an annoloop process (``annoloop api``, ``up``, ``worker``) as a child in a process
group of its own, waiting until its API answers ``/healthz``, and stopping the whole group.

Shared by the benchmark scripts, the simulation's API mode and the integration tests, which
all run real servers: one process group means the API and the worker ``up`` starts stop
together, and a child that dies while we wait is reported with the end of its log instead of
a wait running into its timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx


class ProcessFailed(RuntimeError):
    """The process exited, or did not answer in time; the message ends with its log."""


def cli(*args: str, python: str = sys.executable) -> list[str]:
    """The command line of ``annoloop ARGS`` with ``python``."""
    return [python, "-m", "app.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


@contextmanager
def started(
    argv: Sequence[str],
    env: dict[str, str],
    log: Path,
    *,
    cwd: Path | None = None,
    stop_timeout: float = 30,
    reap_group: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with its output in ``log``, in a new process group; ``stop`` it after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop(proc, stop_timeout, reap_group=reap_group)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30, *, reap_group: bool = True) -> None:
    """SIGTERM to the group, SIGKILL after ``timeout`` s. ``reap_group``: also SIGKILL what
    is left of the group once the leader is gone (a worker still in its warm shutdown would
    outlive a scratch folder); tests that check the leader stops its children pass False."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if reap_group:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def healthy(url: str) -> bool:
    """Whether the API at ``url`` answers ``/healthz`` with 200 now."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Return once ``url`` answers ``/healthz``; ``ProcessFailed`` if ``proc`` exits first or
    ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProcessFailed(f"{proc.args!r} exited with {proc.returncode}:\n{log_tail(log)}")
        if healthy(url):
            return
        time.sleep(0.3)
    raise ProcessFailed(f"{url}/healthz did not answer within {timeout:g} s:\n{log_tail(log)}")
