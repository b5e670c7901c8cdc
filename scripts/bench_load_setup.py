"""The load benchmark's world: a fresh database, the API under test as real processes, a
project with a big queue and annotators with tokens. Used by ``scripts/bench_load.py``."""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import redis
from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.engine import make_url

import app.db_models  # noqa: F401  (every mapper, before the first query)
from app.auth.service import create_annotator, issue_token
from app.cli import migrate
from app.core.config import DEFAULT_SECRET
from app.core.db import make_engine, make_session_factory, unit_of_work
from app.core.enums import CycleState, ProjectKind, Role, Split
from app.core.processes import cli, free_port, started, wait_healthy
from app.cycles.models import Cycle
from app.items.models import Item
from app.queue.models import QueueEntry

FEATURES = 16
UPLOADED = 1000
# The figures must be about the API, not about a limit doing its job.
NO_RATE_LIMITS = {"ANNOLOOP_RATE_LIMIT_LABELS_PER_MINUTE": "0"}


@dataclass
class Server:
    base: str
    db_url: str
    log: Path
    pids: list[int]


@dataclass
class World:
    server: Server
    project_id: int
    cycle_id: int
    items: int
    annotators: list[tuple[int, str]]  # (annotator id, token)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOLOOP_")}
    env.update({"ANNOLOOP_ENVIRONMENT": "test", **NO_RATE_LIMITS, **extra})
    return env


def _descendants(pid: int) -> list[int]:
    """The process and its children (uvicorn workers, the `up` worker), for CPU accounting."""
    found = [pid]
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.extend(_descendants(int(p.name)))
    return found


@contextmanager
def postgres_server(admin_url: str, redis_url: str, workdir: Path) -> Iterator[Server]:
    """uvicorn with 2 workers on a new database ``annoloop_bench_<pid>`` (dropped after)."""
    name = f"annoloop_bench_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    redis.Redis.from_url(redis_url).flushdb()
    try:
        migrate(db_url)
        port = free_port()
        env = _env(
            {
                "ANNOLOOP_DATA_DIR": str(workdir / "data"),
                "ANNOLOOP_DATABASE_URL": db_url,
                "ANNOLOOP_BROKER_URL": redis_url,
                "ANNOLOOP_RESULT_BACKEND": redis_url,
            }
        )
        log = workdir / "api.log"
        args = ["api", "--port", str(port), "--workers", "2"]
        with started(cli(*args), env, log) as proc:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, proc, log, 90)
            yield Server(base, db_url, log, _descendants(proc.pid))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        redis.Redis.from_url(redis_url).flushdb()


@contextmanager
def embedded_server(workdir: Path) -> Iterator[Server]:
    """``annoloop up``: SQLite, the embedded broker, one API process and a worker."""
    data = workdir / "data"
    port = free_port()
    env = _env({"ANNOLOOP_DATA_DIR": str(data)})
    log = workdir / "up.log"
    with started(cli("up", "--port", str(port)), env, log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc, log, 90)
        db_url = f"sqlite:///{data.resolve() / 'annoloop.sqlite'}"
        yield Server(base, db_url, log, _descendants(proc.pid))


def _accounts(engine: Engine, n: int) -> tuple[str, list[tuple[int, str]]]:
    with unit_of_work(make_session_factory(engine)) as db:
        admin = create_annotator(db, actor=None, name="bench-admin", role=Role.admin)
        admin_token, _ = issue_token(db, admin, DEFAULT_SECRET)
        people = []
        for k in range(n):
            person = create_annotator(db, actor=None, name=f"bench-{k}", role=Role.annotator)
            people.append((person.id, issue_token(db, person, DEFAULT_SECRET)[0]))
    return admin_token, people


def _upload(http: httpx.Client, pid: int, n: int) -> None:
    """A few items through the API (the real path); ``_clone_items`` copies their rows for
    the rest: the benchmark is about labelling, and a blob written and fsynced per item
    would make setting up 40,000 items take minutes."""
    n = min(n, UPLOADED)
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(
        buf,
        features=rng.standard_normal((n, FEATURES)).astype(np.float32),
        external_ids=np.array([f"b{i}" for i in range(n)]),
    )
    r = http.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": ("pool.npz", buf.getvalue(), "application/octet-stream")},
    )
    r.raise_for_status()


def _clone_items(engine: Engine, pid: int, n: int) -> None:
    with unit_of_work(make_session_factory(engine)) as db:
        models = list(db.scalars(select(Item).where(Item.project_id == pid)))
        rows = [
            {
                "project_id": pid,
                "split": Split.pool,
                "blob_sha256": models[k % len(models)].blob_sha256,
                "media_type": models[k % len(models)].media_type,
                "width": models[k % len(models)].width,
                "height": models[k % len(models)].height,
                "external_id": f"b{k}",
                "meta": {},
            }
            for k in range(len(models), n)
        ]
        for start in range(0, len(rows), 5000):
            db.execute(insert(Item), rows[start : start + 5000])


def _open_queue(engine: Engine, pid: int) -> tuple[int, int]:
    """A cycle in ``labeling`` with every pool item queued once, as a worker leaves it."""
    with unit_of_work(make_session_factory(engine)) as db:
        item_ids = list(db.scalars(select(Item.id).where(Item.project_id == pid).order_by(Item.id)))
        cycle = Cycle(
            project_id=pid,
            number=1,
            kind=ProjectKind.acquire,
            state=CycleState.labeling,
            strategy="random",
            params={},
            seed=0,
            batch_size=len(item_ids),
        )
        db.add(cycle)
        db.flush()
        db.execute(
            insert(QueueEntry),
            [
                {
                    "project_id": pid,
                    "cycle_id": cycle.id,
                    "item_id": item,
                    "rank": rank,
                    "score": float(len(item_ids) - rank),
                    "labels_wanted": 1,
                    "labels_received": 0,
                    "leases_open": 0,
                    "state": "open",
                }
                for rank, item in enumerate(item_ids)
            ],
        )
        return cycle.id, len(item_ids)


def _analyze(engine: Engine) -> None:
    """Statistics for the tables just filled, as autovacuum (Postgres) would gather within a
    minute of the bulk insert. Without them the planner takes the 40,000 fresh queue rows
    for one and sorts them all on every `next` (tens of ms) instead of walking the
    (project, state, rank, id) index to the first free entry. Only those tables: autovacuum
    never analyses a table nobody has written to, and statistics saying "empty" for `lease`
    and `annotation` (a plain ANALYZE) made the planner pick scans that grow with every
    label."""
    with engine.connect() as conn:
        for table in ("item", "queue_entry"):
            conn.execute(text(f"ANALYZE {table}"))
        conn.commit()


def build_world(server: Server, clients: int, items: int) -> World:
    engine = make_engine(server.db_url)
    try:
        admin, people = _accounts(engine, clients)
        with httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {admin}"}, timeout=300
        ) as http:
            body = {
                "name": f"bench-{uuid.uuid4().hex[:6]}",
                "classes": [str(d) for d in range(10)],
                "model_spec": {"name": "mlp", "input_shape": [FEATURES]},
                "batch_size": 100,
            }
            r = http.post("/api/v1/projects", json=body)
            r.raise_for_status()
            pid = int(r.json()["id"])
            for person_id, _ in people:
                http.post(
                    f"/api/v1/projects/{pid}/members", json={"annotator_id": person_id}
                ).raise_for_status()
            _upload(http, pid, items)
        _clone_items(engine, pid, items)
        cycle_id, queued = _open_queue(engine, pid)
        _analyze(engine)
    finally:
        engine.dispose()
    return World(server, pid, cycle_id, queued, people)


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="annoloop-bench-") as d:
        yield Path(d)
