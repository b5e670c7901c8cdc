"""The ensemble pipeline driven in-process on SQLite, without a broker: the tasks it asks to
send are recorded and run by hand, so the cases a real broker will not produce on cue
(members finishing in any order, redelivered members and joins, a restart between members,
leftovers of an earlier attempt, a failing member) are checked here. Real workers:
``test_ensemble_workers.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import make_engine
from app.core.task_names import ENSEMBLE_JOIN, ENSEMBLE_MEMBER, SCORE_MERGE, SCORE_SHARD
from app.demo.seed import load_demo_arrays
from app.items.models import Item
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import fresh_sqlite
from tests.integration.loop import accounts, bearer, upload_npz
from tests.integration.test_shard_pipeline import Recorder
from worker.ml.data import ArrayDataset, LoaderPool, one_hot
from worker.ml.ensemble import train_ensemble
from worker.ml.evaluation import evaluate
from worker.ml.spec import ModelSpec
from worker.ml.strategies import ScoringContext, get_strategy
from worker.ml.training import TrainConfig
from worker.pipeline.acquire import run_acquire_cycle
from worker.pipeline.ensemble import run_join, run_member
from worker.pipeline.runtime import Runtime, build_runtime
from worker.pipeline.shards import run_merge, run_shard

pytestmark = pytest.mark.slow
N_POOL, N_TEST, BATCH, SEED, M = 300, 60, 10, 7, 3
STRATEGY = "ensemble_mutual_information"
SPEC = {"name": "small_cnn", "input_shape": [1, 28, 28], "hparams": {"epochs": 2, "batch_size": 16}}


def _project(
    client: TestClient,
    h: dict[str, str],
    name: str,
    strategy: str = STRATEGY,
    params: dict[str, Any] | None = None,
) -> tuple[int, list[int]]:
    images, labels = load_demo_arrays()
    r = client.post(
        "/api/v1/projects",
        json={
            "name": name,
            "classes": [str(d) for d in range(10)],
            "model_spec": SPEC,
            "strategy": strategy,
            "strategy_params": {"members": M} if params is None else params,
            "batch_size": BATCH,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    upload_npz(client, h, pid, images[: N_POOL + N_TEST], ["pool"] * N_POOL + ["test"] * N_TEST)
    seed = [int(np.flatnonzero(labels[:N_POOL] == d)[k]) for d in range(10) for k in range(2)]
    rows = [
        {"external_id": f"m{i}", "annotator": "seed", "class_index": int(labels[i])}
        for i in [*seed, *range(N_POOL, N_POOL + N_TEST)]
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    return pid, seed


def _queue(rt: Runtime, cycle_id: int) -> list[tuple[str, float | None]]:
    with rt.factory() as db:
        rows = db.execute(
            select(Item.external_id, QueueEntry.score)
            .join(Item, Item.id == QueueEntry.item_id)
            .where(QueueEntry.cycle_id == cycle_id)
            .order_by(QueueEntry.rank)
        ).all()
    return [(str(e), s) for e, s in rows]


def _cycle(client: TestClient, h: dict[str, str], pid: int, c: int) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/projects/{pid}/cycles/{c}", headers=h).json())


def _in_process(seed_rows: list[int], ids: dict[str, int]) -> tuple[list[str], float]:
    """The same cycle by ``train_ensemble`` and ``Strategy.select`` in one process.
    ``ids``: external id -> database id (which orders exactly equal scores)."""
    images, labels = load_demo_arrays()
    spec = ModelSpec.from_dict({**SPEC, "num_classes": 10})
    labelled = sorted(seed_rows)
    targets = one_hot(labels[labelled].astype(np.int64), 10)
    dataset = ArrayDataset(images[labelled], targets, input_shape=spec.input_shape)
    model, _ = train_ensemble(
        spec, dataset, TrainConfig.from_hparams(spec.hparams), seed=SEED, members=M
    )
    rows = [i for i in range(N_POOL) if i not in set(labelled)]
    pool = LoaderPool(ArrayDataset(images[rows], input_shape=spec.input_shape), 256)
    test = LoaderPool(
        ArrayDataset(images[N_POOL : N_POOL + N_TEST], input_shape=spec.input_shape), 256
    )
    accuracy = evaluate(model, test, labels[N_POOL : N_POOL + N_TEST])["accuracy"]
    item_ids = np.array([ids[f"m{r}"] for r in rows], dtype=np.int64)
    ctx = ScoringContext(
        model,  # type: ignore[arg-type]
        pool,
        None,
        torch.device("cpu"),
        SEED,
        256,
        ids=item_ids,
    )
    sel = get_strategy(STRATEGY, members=M).select(ctx, BATCH)
    return [f"m{rows[int(i)]}" for i in sel.indices], float(accuracy)


def test_members_as_tasks_restart_redelivery_and_shards(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(environment="test", data_dir=tmp_path / "data", database_url=url)
        rt = build_runtime(settings.model_copy(update={"shard_size": 0}))
        sharded = build_runtime(settings.model_copy(update={"shard_size": 64}))
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, 0)[0])
        rec = Recorder()
        with TestClient(create_app(settings, engine=engine, task_sender=rec)) as client:
            one, seed_rows = _project(client, h, "one")
            many, _ = _project(client, h, "many")
            cycles = {}
            for pid in (one, many):
                r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": SEED}, headers=h)
                assert r.status_code == 202, r.text
                cycles[pid] = int(r.json()["id"])
            c = cycles[one]
            assert run_acquire_cycle(rt, c, sender=rec) == f"training {M} ensemble members"
            assert rec.take(ENSEMBLE_MEMBER.name) == [[c, 1, k] for k in range(M)]
            assert _cycle(client, h, one, c)["state"] == "scoring"

            # Member 1 trains, then the worker dies: the restart re-runs the cycle (attempt 2),
            # which keeps member 1 and sends the two missing members only.
            run_member(rt, c, 1, 1, host="a", sender=rec)
            assert run_acquire_cycle(rt, c, sender=rec) == f"training {M} ensemble members"
            assert rec.take(ENSEMBLE_MEMBER.name) == [[c, 2, 0], [c, 2, 2]]
            ens = _cycle(client, h, one, c)["metrics"]["ensemble"]
            assert ens["kept_from_earlier_attempt"] == ["1"]
            assert list(ens["done"]) == ["1"]
            # A leftover task of attempt 1 does nothing.
            assert run_member(rt, c, 1, 0, host="a", sender=rec).startswith("stale")
            assert run_join(rt, c, 1, sender=rec).startswith("stale")

            # Members finish in any order, one redelivered; the join is asked for once the
            # set is complete, and is idempotent.
            run_member(rt, c, 2, 2, host="b", sender=rec)
            assert rec.take(ENSEMBLE_JOIN.name) == []
            assert run_join(rt, c, 2, sender=rec) == f"waiting: 2 of {M} members recorded"
            first = run_member(rt, c, 2, 0, host="c", sender=rec)
            assert run_member(rt, c, 2, 0, host="d", sender=rec) == first  # not retrained
            assert rec.take(ENSEMBLE_JOIN.name) == [[c, 2], [c, 2]]
            assert run_join(rt, c, 2, sender=rec) == f"queued {BATCH} items"
            assert run_join(rt, c, 2, sender=rec).startswith("stale")
            done = _cycle(client, h, one, c)
            assert done["state"] == "labeling"
            assert done["attempts"] == 2
            hosts = {k: d["host"] for k, d in done["metrics"]["ensemble"]["done"].items()}
            assert hosts == {"0": "c", "1": "a", "2": "b"}
            assert done["checkpoint_sha256"]
            assert done["metrics"]["queued"] == BATCH
            assert done["metrics"]["strategy_params"] == {"members": M, "candidates": None}
            queue = _queue(rt, c)
            assert len(queue) == BATCH
            assert len({e for e, _ in queue}) == BATCH

            # The same cycle in one process picks the same items, in the same order, and the
            # ensemble (the members' mean) is what the cycle's test accuracy measured.
            with rt.factory() as db:
                rows = db.execute(select(Item.external_id, Item.id).where(Item.project_id == one))
                ids = {str(e): int(i) for e, i in rows}
            picked, accuracy = _in_process(seed_rows, ids)
            assert [e for e, _ in queue] == picked
            assert done["metrics"]["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)

            # Large pools: the join hands the ensemble to shard tasks; same queue.
            s = cycles[many]
            run_acquire_cycle(sharded, s, sender=rec)
            for args in rec.take(ENSEMBLE_MEMBER.name):
                run_member(sharded, *args, host="x", sender=rec)
            (join,) = rec.take(ENSEMBLE_JOIN.name)
            assert run_join(sharded, *join, sender=rec) == "scoring in 2 shards"
            assert run_join(sharded, *join, sender=rec).startswith("stale")  # redelivered
            for args in rec.take(SCORE_SHARD.name):
                run_shard(sharded, *args, host="y", sender=rec)
            (merge,) = rec.take(SCORE_MERGE.name)
            assert run_merge(sharded, *merge) == f"queued {BATCH} items"
            assert _queue(sharded, s) == queue
            many_cycle = _cycle(client, h, many, s)
            assert many_cycle["checkpoint_sha256"] == done["checkpoint_sha256"]

            # A member that fails marks the attempt failed, with its error.
            r = client.post(f"/api/v1/projects/{one}/cycles", json={"seed": SEED}, headers=h)
            assert r.status_code == 202, r.text
            bad = int(r.json()["id"])
            run_acquire_cycle(rt, bad, sender=rec)
            rec.take(ENSEMBLE_MEMBER.name)
            with pytest.raises(ValueError, match="outside an ensemble"):
                run_member(rt, bad, 1, M, host="z", sender=rec)
            failed = _cycle(client, h, one, bad)
            assert failed["state"] == "failed"
            assert failed["error"].startswith("member 3")
        engine.dispose()
