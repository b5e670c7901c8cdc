"""Sharded scoring across two real ``celery worker`` processes (Postgres + Redis) chooses
exactly what one worker scoring the whole pool in one task chooses, for the same seed.

Each strategy runs in two fresh databases with the same items, labels and cycle seed:
``ANNOLOOP_SHARD_SIZE=0`` with one worker, then a shard size below the scoring batch with two
workers (``--concurrency 1`` each, distinct node names). Core-set covers a batch-aware
``choose`` that also needs the labelled set; entropy covers plain top-B.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url

from app.core.blobs import open_blob_store
from app.core.config import Settings
from app.core.db import make_engine, make_session_factory
from app.demo.seed import load_demo_arrays
from app.items.models import Item
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import REDIS_URL, fresh_postgres
from tests.integration.loop import accounts, bearer, upload_npz, wait_cycle, worker_env
from tests.integration.processes import process, wait_for

pytestmark = pytest.mark.slow
N_POOL, BATCH, SEED = 560, 10, 7
SHARD_SIZE = 64  # below the scoring batch (256): shards hold one batch each
STRATEGIES = ("coreset", "entropy")
LOCK = "annoloop-test:sharded-scoring"
Run = dict[str, Any]  # the cycle as the API shows it + "queue" + "scores"


@contextmanager
def _private_redis_db() -> Iterator[str]:
    """A Redis database that no other run of this test (another checkout, a parallel session)
    uses meanwhile, held by a lock key in it: a worker of theirs must not take our tasks, nor
    ours theirs. The other integration tests share ``REDIS_URL``'s database: never picked."""
    base = make_url(REDIS_URL)
    token = uuid.uuid4().hex
    for db in (n for n in range(1, 15) if str(n) != base.database):
        url = base.set(database=str(db)).render_as_string(hide_password=False)
        client = redis.Redis.from_url(url)
        if not client.set(LOCK, token, nx=True, ex=900):
            continue
        try:
            yield url
        finally:
            if client.get(LOCK) == token.encode():
                client.delete(LOCK)
        return
    raise AssertionError("every Redis database from 1 to 14 is held by another test run")


def _settings(broker_url: str, db_url: str, data_dir: Path) -> Settings:
    client = redis.Redis.from_url(broker_url)
    for key in client.scan_iter():  # a clean broker, keeping our lock
        if key != LOCK.encode():
            client.delete(key)
    return Settings(
        environment="test",
        data_dir=data_dir,
        database_url=db_url,
        broker_url=broker_url,
        result_backend=broker_url,
    )


def _project(client: TestClient, h: dict[str, str], strategy: str) -> int:
    images, labels = load_demo_arrays()
    r = client.post(
        "/api/v1/projects",
        json={
            "name": strategy,
            "classes": [str(d) for d in range(10)],
            "model_spec": {
                "name": "small_cnn",
                "input_shape": [1, 28, 28],
                "hparams": {"epochs": 2, "batch_size": 16},
            },
            "strategy": strategy,
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
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    return pid


def _wait_for_workers(broker_url: str, names: list[str], log: Path) -> None:
    """Every worker consumes before the first task is sent, so each can take shards."""
    app = Celery(broker=broker_url)

    def all_answer() -> bool | None:
        replies = app.control.ping(timeout=1.0) or []
        nodes = {node.split("@")[0] for reply in replies for node in reply}
        return True if nodes >= set(names) else None

    try:
        wait_for(all_answer, 60, f"workers {names} to answer a ping", log)
    finally:
        app.close()


def _run(
    broker_url: str, tmp_path: Path, label: str, shard_size: int, workers: list[str]
) -> dict[str, Run]:
    runs: dict[str, Run] = {}
    with fresh_postgres() as db_url:
        settings = _settings(broker_url, db_url, tmp_path / label)
        engine = make_engine(db_url)
        h = bearer(accounts(engine, settings, 0)[0])
        env = worker_env(settings, ANNOLOOP_SHARD_SIZE=str(shard_size))
        log = tmp_path / f"{label}-{workers[0]}.log"
        with TestClient(create_app(settings, engine=engine)) as client, ExitStack() as stack:
            pids = {s: _project(client, h, s) for s in STRATEGIES}
            for name in workers:
                args = ["worker", "--name", f"{name}@%h", "--concurrency", "1"]
                stack.enter_context(process(args, env, tmp_path / f"{label}-{name}.log"))
            _wait_for_workers(broker_url, workers, log)
            # One cycle at a time, so the idle worker takes a shard while the other trains.
            for strategy, pid in pids.items():
                r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": SEED}, headers=h)
                assert r.status_code == 202, r.text
                runs[strategy] = wait_cycle(client, h, pid, r.json()["id"], log, timeout=120)
        with make_session_factory(engine)() as db:
            for run in runs.values():
                run["queue"] = db.execute(
                    select(Item.external_id, QueueEntry.score)
                    .join(Item, Item.id == QueueEntry.item_id)
                    .where(QueueEntry.cycle_id == run["id"])
                    .order_by(QueueEntry.rank)
                ).all()
        engine.dispose()
    for run in runs.values():
        with np.load(io.BytesIO(open_blob_store(settings).get(run["scores_sha256"]))) as npz:
            run["scores"] = {k: npz[k] for k in npz.files}
    return runs


def test_sharded_scoring_on_two_workers_equals_one_worker(tmp_path: Path) -> None:
    with _private_redis_db() as broker_url:
        single = _run(broker_url, tmp_path, "single", shard_size=0, workers=["solo"])
        sharded = _run(broker_url, tmp_path, "sharded", SHARD_SIZE, workers=["w1", "w2"])
    candidates = N_POOL - 20
    for strategy in STRATEGIES:
        one, many = single[strategy], sharded[strategy]
        assert "sharding" not in one["metrics"]
        sharding = many["metrics"]["sharding"]
        # Shards hold whole scoring batches (256), whatever the configured size.
        assert sharding["shards"] == [[0, 256], [256, 512], [512, candidates]], strategy
        assert sorted(sharding["done"]) == ["0", "1", "2"]
        # Same training on both sides (the checkpoint is content-addressed) ...
        assert one["checkpoint_sha256"] == many["checkpoint_sha256"], strategy
        # ... and the same queue: items in rank order and their scores, bit for bit.
        assert len(one["queue"]) == BATCH
        assert [tuple(e) for e in many["queue"]] == [tuple(e) for e in one["queue"]], strategy
        assert one["metrics"]["queued"] == many["metrics"]["queued"] == BATCH
        assert many["metrics"]["strategy_params"] == one["metrics"]["strategy_params"]
        # Every candidate's stored score, not only the queued ones.
        for key in ("item_ids", "scores", "selected"):
            assert np.array_equal(one["scores"][key], many["scores"][key], equal_nan=True), key
        assert len(one["scores"]["scores"]) == candidates
    # The first sharded cycle ran while both workers were idle: each scored a shard.
    hosts = {
        d["host"].split("@")[0] for d in sharded["coreset"]["metrics"]["sharding"]["done"].values()
    }
    assert hosts == {"w1", "w2"}
