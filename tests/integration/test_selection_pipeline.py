"""Issue 18's strategies through the worker's cycle, in-process on SQLite (tasks recorded and
run by hand, as in ``test_shard_pipeline.py``):

- suggestive annotation fits its ensemble to the labelled targets the cycle hands it, and picks
  the same items scored in one process or in shards (the targets travel to the merge);
- a cold start (nothing labelled) runs TypiClust on the inputs, while a strategy that needs a
  trained model falls back to random, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import make_engine
from app.core.task_names import SCORE_MERGE, SCORE_SHARD
from app.demo.seed import load_demo_arrays
from app.items.models import Item
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import fresh_sqlite
from tests.integration.loop import accounts, bearer, upload_npz
from worker.pipeline.acquire import run_acquire_cycle
from worker.pipeline.runtime import Runtime, build_runtime
from worker.pipeline.shards import run_merge, run_shard

pytestmark = pytest.mark.slow
N_POOL, CANDIDATES, BATCH, SEED = 400, 300, 10, 5


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any], str]] = []

    def send(self, name: str, args: list[Any], queue: str) -> None:
        self.sent.append((name, list(args), queue))

    def take(self, name: str) -> list[list[Any]]:
        picked = [args for n, args, _ in self.sent if n == name]
        self.sent = [s for s in self.sent if s[0] != name]
        return picked


def _project(
    client: TestClient, h: dict[str, str], name: str, strategy: str, params: dict[str, Any]
) -> int:
    images, _ = load_demo_arrays()
    r = client.post(
        "/api/v1/projects",
        json={
            "name": name,
            "classes": [str(d) for d in range(10)],
            "model_spec": {
                "name": "small_cnn",
                "input_shape": [1, 28, 28],
                "hparams": {"epochs": 2, "batch_size": 16},
            },
            "strategy": strategy,
            "strategy_params": params,
            "batch_size": BATCH,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    upload_npz(client, h, pid, images[:N_POOL], ["pool"] * N_POOL)
    return pid


def _label(client: TestClient, h: dict[str, str], pid: int) -> None:
    _, labels = load_demo_arrays()
    seed = [int(np.flatnonzero(labels[:N_POOL] == d)[k]) for d in range(10) for k in range(2)]
    rows = [
        {"external_id": f"m{i}", "annotator": "seed", "class_index": int(labels[i])} for i in seed
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.is_success, r.text


def _queue(rt: Runtime, cycle_id: int) -> list[str]:
    with rt.factory() as db:
        rows = db.scalars(
            select(Item.external_id)
            .select_from(QueueEntry)
            .join(Item, Item.id == QueueEntry.item_id)
            .where(QueueEntry.cycle_id == cycle_id)
            .order_by(QueueEntry.rank)
        ).all()
    return [str(e) for e in rows]


def _start(client: TestClient, h: dict[str, str], pid: int) -> int:
    r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": SEED}, headers=h)
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


def test_suggestive_annotation_in_one_process_and_in_shards(tmp_path: Path) -> None:
    params = {"candidates": CANDIDATES, "members": 2}
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(environment="test", data_dir=tmp_path / "data", database_url=url)
        single = build_runtime(settings.model_copy(update={"shard_size": 0}))
        sharded = build_runtime(settings.model_copy(update={"shard_size": 64}))
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, 0)[0])
        rec = Recorder()
        with TestClient(create_app(settings, engine=engine, task_sender=rec)) as client:
            one = _project(client, h, "one", "suggestive", params)
            many = _project(client, h, "many", "suggestive", params)
            for pid in (one, many):
                _label(client, h, pid)
            c1, c2 = _start(client, h, one), _start(client, h, many)
            assert run_acquire_cycle(single, c1, sender=rec) == f"queued {BATCH} items"
            assert run_acquire_cycle(sharded, c2, sender=rec) == "scoring in 2 shards"
            for args in rec.take(SCORE_SHARD.name):
                run_shard(sharded, *args, host="test", sender=rec)
            [merge] = rec.take(SCORE_MERGE.name)
            assert run_merge(sharded, *merge) == f"queued {BATCH} items"
            done = client.get(f"/api/v1/projects/{one}/cycles/{c1}", headers=h).json()
            assert done["metrics"]["strategy_used"] == "suggestive"
        engine.dispose()
    assert len(_queue(single, c1)) == BATCH
    assert _queue(sharded, c2) == _queue(single, c1)


def test_a_cold_start_runs_typiclust_on_the_inputs_and_others_at_random(tmp_path: Path) -> None:
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(environment="test", data_dir=tmp_path / "data", database_url=url)
        rt = build_runtime(settings)
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, 0)[0])
        rec = Recorder()
        with TestClient(create_app(settings, engine=engine, task_sender=rec)) as client:
            typi = _project(client, h, "typi", "typiclust", {"embedding": "input"})
            feats = _project(client, h, "feats", "typiclust", {})
            cycles = {pid: _start(client, h, pid) for pid in (typi, feats)}
            for c in cycles.values():
                assert run_acquire_cycle(rt, c, sender=rec) == f"queued {BATCH} items"
            used = {
                pid: client.get(f"/api/v1/projects/{pid}/cycles/{c}", headers=h).json()["metrics"]
                for pid, c in cycles.items()
            }
        engine.dispose()
    assert used[typi]["cold_start"]
    assert used[typi]["strategy_used"] == "typiclust"
    assert used[feats]["cold_start"]
    assert used[feats]["strategy_used"] == "random"
    # Different rules, different picks (both read the same 400 digits).
    assert len(_queue(rt, cycles[typi])) == BATCH
    assert _queue(rt, cycles[typi]) != _queue(rt, cycles[feats])
