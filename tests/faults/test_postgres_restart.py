"""Postgres restarted while annotators label: while it is down every request is refused at
once with 503 and the error body (no 500, no hang); afterwards labelling resumes on its own
and every label that was acknowledged is stored, once.

The database is a private throwaway cluster (``tests/faults/services.py``): the shared
server is never restarted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.annotations.models import Annotation
from app.cli import migrate
from app.core.db import make_engine, make_session_factory
from app.fastpath.pool import CONNECT_TIMEOUT_S
from tests.api.helpers import open_batch
from tests.faults.services import private_postgres
from tests.faults.world import add_members, mlp_project, settings_on, upload_features
from tests.integration.loop import accounts, bearer, worker_env
from tests.integration.processes import free_port, process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
DIM, N_ITEMS, ANNOTATORS = 8, 600, 4
# Down longer than a request waits for a pooled connection (then it is refused 503): a
# shorter outage is ridden out by requests that wait, and shows no refusal at all.
DOWN_SECONDS = CONNECT_TIMEOUT_S + 2.0
# Longer than any answer may take: a request still open after this counts as a hang.
HANG_SECONDS = 10.0


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: list[int] = field(default_factory=list)  # annotation ids
    refusals: Counter[tuple[int, str]] = field(default_factory=Counter)  # (status, code)
    other: list[str] = field(default_factory=list)  # anything that is neither
    acked_after_restart: int = 0
    slowest: float = 0.0


def _annotate(
    base: str, pid: int, token: str, stop: threading.Event, restarted: threading.Event, tally: Tally
) -> None:
    with httpx.Client(base_url=base, headers=bearer(token), timeout=HANG_SECONDS) as http:

        def call(method: str, url: str, **kw: object) -> httpx.Response | None:
            t0 = time.monotonic()
            try:
                r = http.request(method, url, **kw)  # type: ignore[arg-type]
            except httpx.TransportError as exc:
                with tally.lock:
                    tally.other.append(f"{method} {url}: {exc!r}")
                return None
            with tally.lock:
                tally.slowest = max(tally.slowest, time.monotonic() - t0)
                if r.status_code >= 300:
                    code = r.json().get("error", {}).get("code", "?")
                    tally.refusals[(r.status_code, code)] += 1
                    if r.status_code != 503 or "Retry-After" not in r.headers:
                        tally.other.append(f"{method} {url}: {r.status_code} {r.text}")
            return r

        while not stop.is_set():
            nxt = call("GET", f"/api/v1/projects/{pid}/next")
            if nxt is None or nxt.status_code != 200:
                time.sleep(0.1)
                continue
            assert nxt.json()["status"] == "leased", nxt.text
            item = nxt.json()["item"]["id"]
            body = {"class_index": item % 10, "idempotency_key": uuid.uuid4().hex}
            # Resend the same label until it is answered, as the annotator page does.
            while not stop.is_set():
                r = call("POST", f"/api/v1/items/{item}/annotations", json=body)
                if r is not None and r.status_code in (200, 201):
                    with tally.lock:
                        tally.acknowledged.append(int(r.json()["id"]))
                        tally.acked_after_restart += restarted.is_set()
                    break
                time.sleep(0.1)


def test_postgres_restart_gives_503s_then_recovers_without_losing_labels(tmp_path: Path) -> None:
    with private_postgres() as pg:
        migrate(pg.url)
        settings = settings_on(pg.url, None, tmp_path / "data")
        engine = make_engine(pg.url)
        factory = make_session_factory(engine)
        admin, people = accounts(engine, settings, annotators=ANNOTATORS)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "api.log"
        env = worker_env(settings, ANNOLOOP_RATE_LIMIT_LABELS_PER_MINUTE="0")
        with process(["api", "--port", str(port)], env, log):
            wait_for(lambda: _healthy(base) or None, 60, "the API", log)
            with httpx.Client(base_url=base, timeout=60) as http:
                pid = mlp_project(http, bearer(admin), DIM)
                add_members(http, bearer(admin), pid, [p for p, _ in people])
                items = upload_features(http, bearer(admin), pid, N_ITEMS, DIM)
            open_batch(factory, pid, items)

            tally, stop, restarted = Tally(), threading.Event(), threading.Event()
            threads = [
                threading.Thread(target=_annotate, args=(base, pid, token, stop, restarted, tally))
                for _, token in people
            ]
            for t in threads:
                t.start()
            wait_for(lambda: len(tally.acknowledged) >= 20 or None, 60, "labels before", log)
            pg.stop()
            time.sleep(DOWN_SECONDS)
            refused_while_down = sum(tally.refusals.values())
            down_status = httpx.get(f"{base}/healthz", timeout=HANG_SECONDS).status_code
            pg.start()
            restarted.set()
            wait_for(lambda: tally.acked_after_restart >= 20 or None, 60, "labels after", log)
            stop.set()
            for t in threads:
                t.join(timeout=2 * HANG_SECONDS)
        with factory() as db:
            stored = db.scalars(select(Annotation.id).where(Annotation.project_id == pid)).all()
        engine.dispose()

    assert tally.other == []  # every refusal was a 503 with Retry-After, nothing hung
    assert refused_while_down > 0
    assert set(tally.refusals) == {(503, "database_unavailable")}
    assert down_status == 503
    assert tally.slowest < HANG_SECONDS
    assert len(set(tally.acknowledged)) == len(tally.acknowledged)
    assert set(tally.acknowledged) <= set(stored)  # nothing acknowledged was lost
    assert len(stored) == len(set(stored))


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
