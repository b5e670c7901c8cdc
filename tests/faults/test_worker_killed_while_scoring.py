"""A worker SIGKILLed while it scores the pool: Redis redelivers the task after the
visibility timeout, a second worker reruns the cycle, and the queue is written once.

(tests/integration/test_reliability.py kills a worker while it trains.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import make_engine, make_session_factory
from app.cycles.models import Cycle
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import fresh_database
from tests.faults.services import private_redis
from tests.faults.world import (
    SCORED_DIM,
    SCORED_MODEL,
    SCORED_POOL,
    SLOW_SCORING,
    mlp_project,
    seed_labels,
    settings_on,
    upload_features,
)
from tests.integration.loop import accounts, bearer, wait_cycle, worker_env
from tests.integration.processes import process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
VISIBILITY_S = 5
N_SEED, BATCH = 100, 20


def test_a_worker_killed_while_scoring_is_redelivered_and_queues_once(tmp_path: Path) -> None:
    with fresh_database("postgres", tmp_path) as db_url, private_redis(tmp_path) as broker:
        settings = settings_on(db_url, broker.url, tmp_path / "data")
        engine = make_engine(db_url)
        factory = make_session_factory(engine)
        admin, _ = accounts(engine, settings, annotators=0)
        h = bearer(admin)
        env = worker_env(settings, ANNOLOOP_BROKER_VISIBILITY_TIMEOUT=str(VISIBILITY_S))
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = mlp_project(
                client,
                h,
                SCORED_DIM,
                batch_size=BATCH,
                model_spec=SCORED_MODEL,
            )
            upload_features(client, h, pid, SCORED_POOL, SCORED_DIM)
            seed_labels(client, h, pid, N_SEED)
            r = client.post(f"/api/v1/projects/{pid}/cycles", json=SLOW_SCORING, headers=h)
            assert r.status_code == 202, r.text
            cycle_id = r.json()["id"]

            def state() -> str:
                with factory() as db:
                    cycle = db.get(Cycle, cycle_id)
                    assert cycle is not None
                    return cycle.state.value

            first_log = tmp_path / "worker-1.log"
            with process(["worker"], env, first_log) as first:
                deadline = time.monotonic() + 180
                while (now := state()) != "scoring":  # polled fast: the phase lasts seconds
                    assert now in ("created", "training"), now
                    assert time.monotonic() < deadline, first_log.read_text()[-3000:]
                    time.sleep(0.05)
                os.killpg(first.pid, signal.SIGKILL)  # the whole worker, mid-scoring
                first.wait()
            assert state() == "scoring"
            # A starting worker gives back unacked messages older than the visibility
            # timeout; younger ones wait for kombu's periodic restore (every ~100 s).
            time.sleep(VISIBILITY_S + 1)
            with factory() as db:
                assert (
                    db.scalars(select(QueueEntry).where(QueueEntry.cycle_id == cycle_id)).all()
                    == []
                )
            second_log = tmp_path / "worker-2.log"
            with process(["worker"], env, second_log):
                cycle = wait_cycle(client, h, pid, cycle_id, second_log, timeout=240)
                # Any stray copy of the task would run now: give it the time to show.
                wait_for(
                    lambda: None if "succeeded" not in second_log.read_text() else True,
                    60,
                    "the redelivered task to finish",
                    second_log,
                )
        with factory() as db:
            queued = db.scalars(
                select(QueueEntry.item_id).where(QueueEntry.project_id == pid)
            ).all()
            cycles = db.scalars(select(Cycle).where(Cycle.project_id == pid)).all()
        engine.dispose()
    assert cycle["state"] == "labeling"
    assert cycle["attempts"] == 2  # the killed run, then the redelivered one
    assert len(cycles) == 1
    assert len(queued) == BATCH  # one set of entries, not two
    assert len(set(queued)) == BATCH
