"""A real annoloop: the API as a uvicorn process (``annoloop api``) and a Celery worker
process, on a fresh migrated database, with an engineer and two annotators. The client
tests talk to it over HTTP only, as an engineer's script would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.auth.service import create_annotator, issue_token
from app.core.db import make_engine, make_session_factory, unit_of_work
from app.core.enums import Role
from tests.backends import fresh_database
from tests.integration.loop import settings_for, worker_env
from tests.integration.processes import free_port, process, wait_for


@dataclass
class Live:
    url: str
    engineer: str
    annotators: list[tuple[int, str]]
    db_url: str
    log: Path


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running_annoloop(
    tmp: Path, backend: str = "sqlite", broker: str = "embedded", **env: str
) -> Iterator[Live]:
    """The API (uvicorn) and a worker as processes on a fresh database; ``env`` adds
    settings (``ANNOLOOP_...``)."""
    with fresh_database(backend, tmp) as db_url:
        settings = settings_for(broker, db_url, tmp / "data")
        engine = make_engine(db_url)
        with unit_of_work(make_session_factory(engine)) as db:
            eng = create_annotator(db, actor=None, name="eng", role=Role.engineer)
            token, _ = issue_token(db, eng, settings.secret_key)
            people = []
            for n in range(2):
                person = create_annotator(db, actor=None, name=f"ann{n}", role=Role.annotator)
                people.append((person.id, issue_token(db, person, settings.secret_key)[0]))
        engine.dispose()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        environment = worker_env(settings, **env)
        api_log, worker_log = tmp / "api.log", tmp / "worker.log"
        with (
            process(["api", "--port", str(port)], environment, api_log),
            process(["worker", "--concurrency", "1"], environment, worker_log),
        ):
            wait_for(lambda: _healthy(url) or None, 60, "the API", api_log)
            yield Live(url, token, people, db_url, worker_log)
        text = api_log.read_text(errors="replace")
        assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """SQLite and the embedded broker: the default setup an engineer starts with."""
    with running_annoloop(tmp_path_factory.mktemp("live")) as server:
        yield server
