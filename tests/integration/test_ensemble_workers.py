"""Ensemble members as tasks on real ``celery worker`` processes (never eager mode).

* Embedded path (SQLite database + the SQLite-backed broker): the worker is killed (SIGKILL,
  the whole process group) after it recorded a member; a new worker re-runs the cycle as a
  new attempt, which keeps the recorded members, trains only the missing ones, and queues once.
* Redis + Postgres with two workers: the members train on both at once.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import make_engine, make_session_factory
from app.cycles.models import Cycle
from app.demo.seed import load_demo_arrays
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import REDIS_URL, fresh_database
from tests.integration.loop import (
    accounts,
    bearer,
    settings_for,
    upload_npz,
    wait_cycle,
    worker_env,
)
from tests.integration.processes import process, wait_for
from tests.integration.test_sharded_scoring import _wait_for_workers

pytestmark = pytest.mark.slow
N_POOL, N_LABELLED, BATCH = 300, 30, 10


def _project(client: TestClient, h: dict[str, str], members: int, epochs: int) -> int:
    images, labels = load_demo_arrays()
    r = client.post(
        "/api/v1/projects",
        json={
            "name": "ensemble",
            "classes": [str(d) for d in range(10)],
            "model_spec": {
                "name": "small_cnn",
                "input_shape": [1, 28, 28],
                "hparams": {"epochs": epochs, "batch_size": 16},
            },
            "strategy": "ensemble_vote_entropy",
            "strategy_params": {"members": members},
            "batch_size": BATCH,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    upload_npz(client, h, pid, images[:N_POOL], ["pool"] * N_POOL)
    rows = [
        {"external_id": f"m{i}", "annotator": "seed", "class_index": int(labels[i])}
        for i in range(N_LABELLED)
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    return pid


def _queued(engine: Any, cycle_id: int) -> list[int]:
    with make_session_factory(engine)() as db:
        return list(
            db.scalars(select(QueueEntry.item_id).where(QueueEntry.cycle_id == cycle_id)).all()
        )


def test_a_killed_worker_keeps_its_members_and_the_cycle_queues_once(tmp_path: Path) -> None:
    members = 4
    with fresh_database("sqlite", tmp_path) as db_url:
        settings = settings_for("embedded", db_url, tmp_path / "data")
        assert settings.broker_url.startswith("sqla+")
        engine = make_engine(db_url)
        factory = make_session_factory(engine)
        h = bearer(accounts(engine, settings, 0)[0])
        env = worker_env(settings)
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = _project(client, h, members, epochs=10)
            cycle_id = 0

            def recorded() -> int:
                with factory() as db:
                    cycle = db.get(Cycle, cycle_id)
                    assert cycle is not None
                    return len((cycle.metrics or {}).get("ensemble", {}).get("done", {}))

            first_log = tmp_path / "worker-1.log"
            with process(["worker"], env, first_log) as first:
                # Started once the worker is up: a worker starting on the embedded broker
                # re-sends every unfinished cycle (worker/recovery.py), a created one too.
                wait_for(lambda: "ready." in first_log.read_text() or None, 120, "ready", first_log)
                r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": 5}, headers=h)
                assert r.status_code == 202, r.text
                cycle_id = int(r.json()["id"])
                deadline = time.monotonic() + 240
                while recorded() == 0:  # polled fast: a member takes seconds
                    assert time.monotonic() < deadline, first_log.read_text()[-3000:]
                    time.sleep(0.05)
                os.killpg(first.pid, signal.SIGKILL)  # the whole worker, between members
                first.wait()
            kept = recorded()
            assert 1 <= kept < members, "kill came too late to test anything"
            second_log = tmp_path / "worker-2.log"
            with process(["worker"], env, second_log):
                cycle = wait_cycle(client, h, pid, cycle_id, second_log, timeout=300)
        queued = _queued(engine, cycle_id)
        engine.dispose()
    assert cycle["state"] == "labeling"
    assert cycle["attempts"] == 2  # the killed run, then the one the new worker re-sent
    ens = cycle["metrics"]["ensemble"]
    assert len(ens["kept_from_earlier_attempt"]) >= kept
    assert sorted(ens["done"], key=int) == [str(k) for k in range(members)]
    assert cycle["metrics"]["queued"] == BATCH
    assert len(queued) == BATCH
    assert len(set(queued)) == BATCH
    assert cycle["metrics"]["test_unlabelled"] == 0
    assert cycle["checkpoint_sha256"]


def test_members_train_on_two_redis_workers_at_once(tmp_path: Path) -> None:
    members = 4
    with fresh_database("postgres", tmp_path) as db_url:
        settings: Settings = settings_for("redis", db_url, tmp_path / "data")
        assert settings.broker_url == REDIS_URL
        engine = make_engine(db_url)
        h = bearer(accounts(engine, settings, 0)[0])
        env = worker_env(settings)
        with TestClient(create_app(settings, engine=engine)) as client, ExitStack() as stack:
            pid = _project(client, h, members, epochs=8)
            workers = ["e1", "e2"]
            for name in workers:
                args = ["worker", "--name", f"{name}@%h", "--concurrency", "1"]
                stack.enter_context(process(args, env, tmp_path / f"{name}.log"))
            log = tmp_path / "e1.log"
            _wait_for_workers(settings.broker_url, workers, log)
            r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": 5}, headers=h)
            assert r.status_code == 202, r.text
            cycle = wait_cycle(client, h, pid, int(r.json()["id"]), log, timeout=300)
        queued = _queued(engine, cycle["id"])
        engine.dispose()
    done = cycle["metrics"]["ensemble"]["done"]
    assert sorted(done, key=int) == [str(k) for k in range(members)]
    assert {d["host"].split("@")[0] for d in done.values()} == {"e1", "e2"}
    assert cycle["timings"]["train_s"] > 0
    assert len(queued) == BATCH == len(set(queued))
    assert cycle["attempts"] == 1
    assert np.isfinite(cycle["metrics"]["train_loss"])
