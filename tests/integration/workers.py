"""What the tests with real worker processes share: a fresh database with the API in-process
and a worker's environment (``setup``), and killing a worker mid-task so that another one
takes the task over (``kill_when``, ``wait_until_redeliverable``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import make_engine, make_session_factory
from app.core.processes import log_tail
from app.main import create_app
from tests.backends import fresh_database
from tests.integration.loop import accounts, bearer, settings_for, worker_env
from tests.integration.processes import process

# The shortest visibility timeout the settings allow: a killed worker's task comes back soon.
VISIBILITY_S = 5


@dataclass
class Setup:
    settings: Settings
    engine: Engine
    client: TestClient
    h: dict[str, str]  # the admin's authorization header
    people: list[tuple[int, str]]  # annotators: (id, token)
    env: dict[str, str]  # a worker process's environment
    log: Path  # where the (first) worker writes

    def factory(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)


@contextmanager
def setup(
    db_backend: str,
    broker: str,
    tmp_path: Path,
    *,
    annotators: int = 0,
    **worker_settings: str,
) -> Iterator[Setup]:
    """A fresh database, the API in-process, and what a worker needs to join them. ``broker``
    is ``redis`` (the shared test Redis, emptied), ``embedded``, or a ``redis://`` URL."""
    with fresh_database(db_backend, tmp_path) as db_url:
        settings = settings_for(broker, db_url, tmp_path / "data")
        engine = make_engine(db_url)
        admin, people = accounts(engine, settings, annotators=annotators)
        env = worker_env(settings, **worker_settings)
        try:
            with TestClient(create_app(settings, engine=engine)) as client:
                h = bearer(admin)
                yield Setup(settings, engine, client, h, people, env, tmp_path / "worker.log")
        finally:
            engine.dispose()


def kill_when(
    reached: Callable[[], bool], env: dict[str, str], log: Path, timeout: float = 180
) -> float:
    """Start a worker and SIGKILL its whole process group (the worker and its pool child, no
    warm shutdown) as soon as ``reached()``, polled every 50 ms: the phases it waits for last
    seconds. Returns the monotonic time ``reached()`` was first true, when the task had
    certainly been delivered."""
    with process(["worker"], env, log) as worker:
        deadline = time.monotonic() + timeout
        while not reached():
            assert worker.poll() is None, f"the worker exited early\n{log_tail(log)}"
            assert time.monotonic() < deadline, f"not reached in {timeout:g} s\n{log_tail(log)}"
            time.sleep(0.05)
        seen = time.monotonic()
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    return seen


def wait_until_redeliverable(seen: float, visibility_s: float = VISIBILITY_S) -> None:
    """Redis: a starting worker gives back at once the unacked messages older than the
    visibility timeout, while younger ones wait for kombu's periodic sweep (10 s x 10, about
    100 s). Waiting until the killed task's message is past the timeout (1 s spare) before
    the next worker starts saves that sweep."""
    time.sleep(max(0.0, seen + visibility_s + 1 - time.monotonic()))
