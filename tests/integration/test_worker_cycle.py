"""A cycle runs in a real ``celery worker`` process, on Redis + Postgres and on the embedded
SQLite database + SQLite broker, and leaves B distinct unlabelled pool items in the queue."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.auth.service import create_annotator, issue_token
from app.core.config import Settings
from app.core.db import make_engine, make_session_factory, unit_of_work
from app.core.enums import Role
from app.demo.seed import load_demo_arrays
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import REDIS_URL, fresh_database
from tests.integration.processes import env_for, process, wait_for

pytestmark = pytest.mark.slow
N_POOL, N_TEST, BATCH = 300, 100, 10


def _settings(kind: str, db_url: str, data_dir: Path) -> Settings:
    if kind == "redis":
        redis.Redis.from_url(REDIS_URL).flushdb()
        return Settings(
            environment="test",
            data_dir=data_dir,
            database_url=db_url,
            broker_url=REDIS_URL,
            result_backend=REDIS_URL,
        )
    return Settings(environment="test", data_dir=data_dir, database_url=db_url)


def _env(settings: Settings) -> dict[str, str]:
    return env_for(
        {
            "ANNOLOOP_DATA_DIR": str(settings.data_dir),
            "ANNOLOOP_DATABASE_URL": settings.database_url,
            "ANNOLOOP_BROKER_URL": settings.broker_url,
            "ANNOLOOP_RESULT_BACKEND": settings.result_backend,
        }
    )


def _prepare_project(client: TestClient, h: dict[str, str]) -> tuple[int, int, list[int]]:
    images, labels = load_demo_arrays()
    images, labels = images[: N_POOL + N_TEST], labels[: N_POOL + N_TEST]
    r = client.post(
        "/api/v1/projects",
        json={
            "name": "mnist",
            "classes": [str(d) for d in range(10)],
            "model_spec": {
                "name": "small_cnn",
                "input_shape": [1, 28, 28],
                "hparams": {"epochs": 3, "batch_size": 16},
            },
            "strategy": "entropy",
            "batch_size": BATCH,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    buf = io.BytesIO()
    split = np.array(["pool"] * N_POOL + ["test"] * N_TEST)
    np.savez(
        buf,
        images=images,
        split=split,
        external_ids=np.array([f"m{i}" for i in range(len(images))]),
    )
    r = client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": ("mnist.npz", buf.getvalue(), "application/octet-stream")},
        headers=h,
    )
    assert r.status_code == 201, r.text
    seed = [int(np.flatnonzero(labels[:N_POOL] == d)[k]) for d in range(10) for k in range(2)]
    rows = [
        {"external_id": f"m{i}", "annotator": "seed", "class_index": int(labels[i])} for i in seed
    ]
    rows += [
        {"external_id": f"m{i}", "annotator": "truth", "class_index": int(labels[i])}
        for i in range(N_POOL, N_POOL + N_TEST)
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
    assert r.status_code == 202, r.text
    return pid, r.json()["id"], seed


@pytest.mark.parametrize(("db_backend", "broker"), [("postgres", "redis"), ("sqlite", "embedded")])
def test_a_cycle_reaches_labeling_in_a_real_worker(
    db_backend: str, broker: str, tmp_path: Path
) -> None:
    with fresh_database(db_backend, tmp_path) as db_url:
        settings = _settings(broker, db_url, tmp_path / "data")
        engine = make_engine(settings.database_url)
        factory = make_session_factory(engine)
        with unit_of_work(factory) as db:
            admin = create_annotator(db, actor=None, name="admin", role=Role.admin)
            token, _ = issue_token(db, admin, settings.secret_key)
        h = {"Authorization": f"Bearer {token}"}
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            pid, cycle_id, seed = _prepare_project(client, h)
            with process(["worker"], _env(settings), log):

                def labeling() -> dict[str, Any] | None:
                    c = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}", headers=h).json()
                    assert c["state"] != "failed", c["error"]
                    return c if c["state"] == "labeling" else None

                cycle = wait_for(labeling, 240, "the cycle to reach labeling", log)
            hist = client.get(
                f"/api/v1/projects/{pid}/cycles/{cycle_id}/scores", params={"bins": 10}, headers=h
            ).json()
            items = client.get(
                f"/api/v1/projects/{pid}/items", params={"limit": 500}, headers=h
            ).json()["items"]
        by_id = {i["id"]: i for i in items}
        with factory() as db:
            queue = db.scalars(select(QueueEntry).where(QueueEntry.cycle_id == cycle_id)).all()
        engine.dispose()
        queued = [e.item_id for e in queue]
        assert len(queued) == BATCH
        assert len(set(queued)) == BATCH
        assert all(by_id[i]["split"] == "pool" for i in queued)
        seed_external = {f"m{s}" for s in seed}
        seed_ids = {i["id"] for i in items if i["external_id"] in seed_external}
        assert not seed_ids & set(queued)
        assert sorted(e.rank for e in queue) == list(range(BATCH))
        scores = [e.score for e in sorted(queue, key=lambda e: e.rank)]
        assert scores == sorted(scores, reverse=True)  # entropy: best first
        assert cycle["metrics"]["test"]["n"] == N_TEST
        assert 0.0 <= cycle["metrics"]["test"]["accuracy"] <= 1.0
        assert cycle["checkpoint_sha256"]
        assert cycle["scores_sha256"]
        assert set(cycle["timings"]) >= {"train_s", "score_s"}
        assert hist["n"] == N_POOL - 20  # every unlabelled pool item was scored
        assert sum(hist["counts"]) == hist["n"]
        assert sorted(hist["selected_scores"], reverse=True) == scores
