"""The sharded-scoring pipeline driven in-process on SQLite, without a broker: the tasks it
asks to send are recorded and run by hand, so the cases a real broker will not produce on cue
(redelivered shards and merges, a failing shard, leftovers of an earlier attempt) are checked
here, on the dispersion + candidate-subset path. Real workers: ``test_sharded_scoring.py``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import make_engine
from app.core.task_names import SCORE_MERGE, SCORE_SHARD
from app.cycles.models import Cycle
from app.demo.seed import load_demo_arrays
from app.items.models import Item
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import fresh_sqlite
from tests.integration.loop import accounts, bearer, upload_npz
from worker.ml.strategies.base import top_b
from worker.pipeline.acquire import run_acquire_cycle
from worker.pipeline.runtime import Runtime, build_runtime
from worker.pipeline.shards import run_merge, run_shard

pytestmark = pytest.mark.slow
N_POOL, CANDIDATES, BATCH, SEED = 600, 300, 10, 7


class Recorder:
    """A ``TaskSender`` that keeps what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any], str]] = []

    def send(self, name: str, args: list[Any], queue: str) -> None:
        self.sent.append((name, list(args), queue))

    def take(self, name: str) -> list[list[Any]]:
        picked = [args for n, args, _ in self.sent if n == name]
        self.sent = [s for s in self.sent if s[0] != name]
        return picked


def _project(client: TestClient, h: dict[str, str], name: str) -> int:
    images, labels = load_demo_arrays()
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
            "strategy": "dispersion",
            "strategy_params": {"candidates": CANDIDATES},
            "batch_size": BATCH,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    upload_npz(client, h, pid, images[:N_POOL], ["pool"] * N_POOL)
    seed = [int(np.flatnonzero(labels[:N_POOL] == d)[k]) for d in range(10) for k in range(2)]
    rows = [
        {"external_id": f"m{i}", "annotator": "seed", "class_index": int(labels[i])} for i in seed
    ]
    assert client.post(
        f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h
    ).is_success
    return pid


def _queue(rt: Runtime, cycle_id: int) -> list[tuple[str, float | None]]:
    with rt.factory() as db:
        rows = db.execute(
            select(Item.external_id, QueueEntry.score)
            .join(Item, Item.id == QueueEntry.item_id)
            .where(QueueEntry.cycle_id == cycle_id)
            .order_by(QueueEntry.rank)
        ).all()
    return [(str(e), s) for e, s in rows]


def _queue_ids(rt: Runtime, cycle_id: int) -> list[tuple[int, float | None]]:
    with rt.factory() as db:
        rows = db.execute(
            select(QueueEntry.item_id, QueueEntry.score)
            .where(QueueEntry.cycle_id == cycle_id)
            .order_by(QueueEntry.rank)
        ).all()
    return [(int(i), s) for i, s in rows]


def _scores(rt: Runtime, cycle_id: int) -> dict[str, np.ndarray]:
    """The cycle's stored scores of its whole scored pool (``shards.scores_bytes``)."""
    with rt.factory() as db:
        sha = db.scalar(select(Cycle.scores_sha256).where(Cycle.id == cycle_id))
    assert sha is not None
    with np.load(io.BytesIO(rt.blobs.get(sha))) as npz:
        return {k: npz[k] for k in npz.files}


def _seed(rt: Runtime, cycle_id: int) -> int:
    with rt.factory() as db:
        return int(db.scalars(select(Cycle.seed).where(Cycle.id == cycle_id)).one())


def test_shards_survive_redelivery_failure_and_retry(tmp_path: Path) -> None:
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(environment="test", data_dir=tmp_path / "data", database_url=url)
        single = build_runtime(settings.model_copy(update={"shard_size": 0}))
        sharded = build_runtime(settings.model_copy(update={"shard_size": 64}))
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, 0)[0])
        rec = Recorder()
        with TestClient(create_app(settings, engine=engine, task_sender=rec)) as client:
            one, many = _project(client, h, "one"), _project(client, h, "many")
            cycles = {}
            for pid in (one, many):
                r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": SEED}, headers=h)
                cycles[pid] = int(r.json()["id"])
            assert run_acquire_cycle(single, cycles[one], sender=rec) == "queued 10 items"
            c = cycles[many]
            assert run_acquire_cycle(sharded, c, sender=rec) == "scoring in 2 shards"
            first = rec.take(SCORE_SHARD.name)
            # 300 seeded candidates out of 580: one full scoring batch (256), then the rest.
            assert [a[1:] for a in first] == [[1, 0, 0, 256], [1, 1, 256, 300]]

            # A shard that fails marks the cycle failed, with its error ...
            with pytest.raises(ValueError, match="shard 0 is"):
                run_shard(sharded, c, 1, 0, 0, 10, host="test", sender=rec)
            failed = client.get(f"/api/v1/projects/{many}/cycles/{c}", headers=h).json()
            assert failed["state"] == "failed"
            assert failed["error"].startswith("shard 0: ValueError")
            # ... the retry endpoint runs the cycle again, as attempt 2 ...
            assert client.post(f"/api/v1/projects/{many}/cycles/{c}/retry", headers=h).is_success
            assert run_acquire_cycle(sharded, c, sender=rec) == "scoring in 2 shards"
            second = rec.take(SCORE_SHARD.name)
            assert [a[1] for a in second] == [2, 2]
            # ... and the first attempt's shards, delivered late, change nothing.
            for args in first:
                assert run_shard(sharded, *args, host="old", sender=rec).startswith("stale")
            assert rec.take(SCORE_MERGE.name) == []

            # Shards in any order, one redelivered: each delivery that finds the set complete
            # sends the merge again (so a lost merge message is re-sent), and the queue
            # still opens once.
            for args in [second[1], second[0], second[0]]:
                run_shard(sharded, *args, host="test", sender=rec)
            assert rec.take(SCORE_MERGE.name) == [[c, 2], [c, 2]]
            assert run_merge(sharded, c, 2) == "queued 10 items"
            assert run_merge(sharded, c, 2).startswith("stale")
            done = client.get(f"/api/v1/projects/{many}/cycles/{c}", headers=h).json()
            assert done["state"] == "labeling"
        engine.dispose()

    # The same scores as one process scoring everything: dispersion's recorded epochs and the
    # seeded candidate subset both travel to the shards. The two projects hold the same
    # images under other item ids, and ties (dispersion at T = 2 has many) are broken by a
    # hash of the item id, so each queue is checked against the top-B rule on its own ids.
    one_scores, many_scores = _scores(single, cycles[one]), _scores(sharded, c)
    np.testing.assert_array_equal(one_scores["scores"], many_scores["scores"])
    for rt, cid, rec_scores in ((single, cycles[one], one_scores), (sharded, c, many_scores)):
        seed = _seed(rt, cid)
        chosen = top_b(rec_scores["scores"], BATCH, seed, rec_scores["item_ids"]).indices
        assert [i for i, _ in _queue_ids(rt, cid)] == rec_scores["item_ids"][chosen].tolist()
        assert rec_scores["selected"].tolist() == rec_scores["item_ids"][chosen].tolist()
    assert len(_queue(single, cycles[one])) == BATCH
