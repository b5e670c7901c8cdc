"""Concurrent undos and concurrent resends of one idempotency key (issue 15, item 10).

A real server process with a client per thread: the races live between concurrent database
transactions, which an in-process test client (one request at a time) never runs. Postgres
twice: the hot path (``annoloop_submit``) and the ORM routes (``ANNOLOOP_ASYNC_HOT_PATH=0``).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.annotations.models import Annotation
from app.core.db import make_engine, make_session_factory
from app.core.processes import wait_healthy
from app.projects.models import Project
from app.queue.models import Lease, QueueEntry
from tests.api.helpers import SMALL_CNN, open_batch, png_bytes
from tests.backends import BACKENDS, fresh_database
from tests.integration.loop import accounts, bearer, settings_for, worker_env
from tests.integration.processes import free_port, process

pytestmark = pytest.mark.slow

# (backend, ANNOLOOP_ASYNC_HOT_PATH): SQLite has no hot path.
SETUPS = [s for s in [("sqlite", "1"), ("postgres", "1"), ("postgres", "0")] if s[0] in BACKENDS]
IDS = [f"{db}-{'hot' if hot == '1' else 'orm'}" for db, hot in SETUPS]
UNDOS = 12
RESENDS = 30


@contextmanager
def _server(
    tmp_path: Path, backend: str, hot: str
) -> Iterator[tuple[str, str, int, sessionmaker[Session]]]:
    """A running API with one project of three queued items and one annotator member:
    (base URL, the annotator's token, project id, session factory)."""
    with fresh_database(backend, tmp_path) as db_url:
        settings = settings_for("embedded", db_url, tmp_path / "data")
        engine = make_engine(db_url)
        admin, people = accounts(engine, settings, annotators=1)
        (person_id, annotator) = people[0]
        port = free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        log = tmp_path / "api.log"
        env = worker_env(settings, ANNOLOOP_ASYNC_HOT_PATH=hot)
        try:
            with process(["api", "--port", str(port)], env, log) as api:
                wait_healthy(f"http://127.0.0.1:{port}", api, log, 60)
                h = bearer(admin)
                with httpx.Client(base_url=base, headers=h, timeout=30) as http:
                    body = {"name": "races", "classes": ["a", "b"], "model_spec": SMALL_CNN}
                    pid = http.post("/projects", json=body).json()["id"]
                    member = {"annotator_id": person_id}
                    assert http.post(f"/projects/{pid}/members", json=member).status_code == 204
                    ids = []
                    for k in range(3):
                        png = ("x.png", png_bytes(k), "image/png")
                        r = http.post(f"/projects/{pid}/items", files={"file": png})
                        assert r.status_code == 201, r.text
                        ids.append(r.json()["id"])
                factory = make_session_factory(engine)
                open_batch(factory, pid, ids)
                yield base, annotator, pid, factory
                assert "Traceback" not in log.read_text(errors="replace"), log.read_text()
        finally:
            engine.dispose()


def _all_at_once(
    n: int, base: str, token: str, path: str, body: dict[str, Any] | None = None
) -> list[httpx.Response]:
    """``POST path`` from ``n`` threads, each with its own connection, released together."""
    start = threading.Barrier(n)
    out: list[httpx.Response | None] = [None] * n

    def one(k: int) -> None:
        with httpx.Client(base_url=base, headers=bearer(token), timeout=60) as http:
            http.get("/projects")  # connected before the barrier
            start.wait()
            out[k] = http.post(path, json=body)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def _codes(responses: list[httpx.Response]) -> Counter[tuple[int, str | None]]:
    return Counter(
        (r.status_code, r.json()["error"]["code"] if r.status_code >= 400 else None)
        for r in responses
    )


@pytest.mark.parametrize(("backend", "hot"), SETUPS, ids=IDS)
def test_concurrent_undos_of_one_label_give_one_undo_and_409s(
    tmp_path: Path, backend: str, hot: str
) -> None:
    with _server(tmp_path, backend, hot) as (base, token, pid, factory):
        for _ in range(3):  # the undo leases the item back: label it again, undo again
            with httpx.Client(base_url=base, headers=bearer(token), timeout=30) as http:
                item = http.get(f"/projects/{pid}/next").json()["item"]["id"]
                r = http.post(f"/items/{item}/annotations", json={"class_index": 1})
                assert r.status_code == 201, r.text

            undo = f"/projects/{pid}/annotations:undo"
            responses = _all_at_once(UNDOS, base, token, undo)

            assert _codes(responses) == {(200, None): 1, (409, "nothing_to_undo"): UNDOS - 1}
            # Taken back once: counted off its entry and the budget once, leased back once.
            with factory() as db:
                entry = db.scalar(select(QueueEntry).where(QueueEntry.item_id == item))
                assert entry is not None
                assert (entry.labels_received, entry.leases_open) == (0, 1)
                assert db.scalar(select(Project.labels_spent).where(Project.id == pid)) == 0
                held = select(func.count()).where(
                    Lease.item_id == item, Lease.released_at.is_(None)
                )
                assert db.scalar(held) == 1


@pytest.mark.parametrize(("backend", "hot"), SETUPS, ids=IDS)
def test_concurrent_resends_of_one_key_all_get_the_stored_label(
    tmp_path: Path, backend: str, hot: str
) -> None:
    with _server(tmp_path, backend, hot) as (base, token, pid, factory):
        for round_ in range(3):
            with httpx.Client(base_url=base, headers=bearer(token), timeout=30) as http:
                item = http.get(f"/projects/{pid}/next").json()["item"]["id"]
            body = {"class_index": 1, "idempotency_key": f"resend-{round_}"}
            path = f"/items/{item}/annotations"
            responses = _all_at_once(RESENDS, base, token, path, body)

            codes = _codes(responses)
            assert codes == {(201, None): 1, (200, None): RESENDS - 1}
            assert len({r.json()["id"] for r in responses}) == 1
            with factory() as db:
                labels = select(func.count()).where(Annotation.item_id == item)
                assert db.scalar(labels) == 1
