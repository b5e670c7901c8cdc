"""``GET /progress`` at 10^3 and 10^6 labels, on SQLite and Postgres (issue 15, item 7).

For each size: a fresh database with that many live labels (10 per item, 200 annotators),
the real app in-process (FastAPI's TestClient), and

- ``full``: computing the per-person statistics once, what every request cost before;
- ``first``: the first request (it computes them in the request, once per API process);
- ``served``: the median and worst of the next 20 requests, the figure that must not grow
  with the labels (the statistics come from the last background computation).

    .venv/bin/python scripts/bench_progress.py --backend sqlite --sizes 1000,1000000
    .venv/bin/python scripts/bench_progress.py --backend postgres \
        --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

import app.db_models  # noqa: F401  (every mapper, before the first query)
from app.annotations import derived
from app.annotations.models import Annotation
from app.auth.models import Annotator
from app.auth.service import create_annotator, issue_token
from app.cli import migrate
from app.core.config import Settings
from app.core.db import make_engine, make_session_factory, unit_of_work, utcnow
from app.core.enums import LabelSource, ProjectKind, Role, Split
from app.items.models import Item
from app.main import create_app
from app.projects.models import Project
from app.reports.people_stats import compute

VOTES_PER_ITEM = 10
ANNOTATORS = 200
CLASSES = 10
CHUNK = 50_000


@contextmanager
def database(backend: str, postgres_url: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        url = f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.sqlite'}"
        migrate(url)
        yield url
        return
    name = f"annoloop_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(url: str, labels: int, secret: str) -> tuple[int, str]:
    """A project with ``labels`` live human labels; returns its id and an admin token."""
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as db:
        admin = create_annotator(db, actor=None, name="admin", role=Role.admin)
        token, _ = issue_token(db, admin, secret)
        project = Project(
            name="bench", kind=ProjectKind.acquire, classes=[str(c) for c in range(CLASSES)],
            model_spec={"name": "mlp", "input_shape": [4], "num_classes": CLASSES},
            strategy="entropy", strategy_params={}, batch_size=100,
        )  # fmt: skip
        db.add(project)
        db.flush()
        pid = project.id
        people = [Annotator(name=f"a{i}", role=Role.annotator) for i in range(ANNOTATORS)]
        db.add_all(people)
        db.flush()
        person_ids = [p.id for p in people]
    items = max(1, labels // VOTES_PER_ITEM)
    now = utcnow()
    with engine.begin() as conn:
        for start in range(0, items, CHUNK):
            rows = [
                {"project_id": pid, "split": Split.pool, "external_id": f"i{n}",
                 "blob_sha256": "0" * 64, "media_type": "application/x-npy", "meta": {},
                 "width": 4, "height": 1,
                 "created_at": now}
                for n in range(start, min(start + CHUNK, items))
            ]  # fmt: skip
            conn.execute(insert(Item), rows)
        item_ids = [r[0] for r in conn.execute(text("SELECT id FROM item ORDER BY id"))]
        for start in range(0, labels, CHUNK):
            rows = []
            for n in range(start, min(start + CHUNK, labels)):
                item = item_ids[n // VOTES_PER_ITEM]
                who = person_ids[(n * 7 + n // VOTES_PER_ITEM) % ANNOTATORS]
                rows.append({
                    "item_id": item, "project_id": pid, "annotator_id": who,
                    "class_index": (n * 31 + item) % 3, "source": LabelSource.human,
                    "created_at": now - timedelta(seconds=labels - n),
                })  # fmt: skip
            conn.execute(insert(Annotation), rows)
        if url.startswith("postgresql"):
            conn.execute(text("ANALYZE"))
    engine.dispose()
    return pid, token


def measure(url: str, folder: Path, labels: int, requests: int) -> dict[str, float]:
    settings = Settings(environment="test", data_dir=folder / "data", database_url=url)
    pid, token = fill(url, labels, settings.secret_key)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    derived._CACHE.clear()  # each figure pays for its own Dawid–Skene fit
    with factory() as db:
        project = db.get(Project, pid)
        assert project is not None
        t0 = time.perf_counter()
        compute(db, project)
        full = time.perf_counter() - t0
    h = {"Authorization": f"Bearer {token}"}
    derived._CACHE.clear()
    with TestClient(create_app(settings, engine=engine)) as client:
        t0 = time.perf_counter()
        first = client.get(f"/api/v1/projects/{pid}/progress", headers=h)
        first_s = time.perf_counter() - t0
        assert first.status_code == 200, first.text
        served = []
        for _ in range(requests):
            t0 = time.perf_counter()
            r = client.get(f"/api/v1/projects/{pid}/progress", headers=h)
            served.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            time.sleep(0.25)  # a dashboard polls; the statistics refresh behind it
        store = client.app.state.people_stats  # type: ignore[attr-defined]
        deadline = time.monotonic() + 120
        while store._running and time.monotonic() < deadline:  # let the last one finish
            time.sleep(0.5)
    engine.dispose()
    return {
        "labels": labels,
        "full_s": full,
        "first_s": first_s,
        "served_median_s": statistics.median(served),
        "served_max_s": max(served),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("ANNOLOOP_BENCH_POSTGRES_URL", ""),
        help="an admin URL; a database is created and dropped",
    )
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    print(f"backend {args.backend}, load {os.getloadavg()[0]:.1f}")
    print("labels     full (old request)  first request  served median  served max")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            with database(args.backend, args.postgres_url, Path(tmp)) as url:
                m = measure(url, Path(tmp), size, args.requests)
            print(
                f"{m['labels']:>9,}  {m['full_s']:>16.3f} s  {m['first_s']:>11.3f} s"
                f"  {m['served_median_s']:>11.4f} s  {m['served_max_s']:>8.4f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
