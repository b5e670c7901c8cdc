"""A worker SIGKILLed while it scores the pool: Redis redelivers the task after the
visibility timeout, a second worker reruns the cycle, and the queue is written once.

(tests/integration/test_reliability.py kills a worker while it trains.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from app.cycles.models import Cycle
from app.queue.models import QueueEntry
from tests.faults.services import private_redis
from tests.faults.world import (
    SCORED_DIM,
    SCORED_MODEL,
    SCORED_POOL,
    SLOW_SCORING,
    mlp_project,
    seed_labels,
    upload_features,
)
from tests.integration.loop import wait_cycle
from tests.integration.processes import process, wait_for
from tests.integration.workers import VISIBILITY_S, kill_when, setup, wait_until_redeliverable

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
N_SEED, BATCH = 100, 20


def test_a_worker_killed_while_scoring_is_redelivered_and_queues_once(tmp_path: Path) -> None:
    visibility = str(VISIBILITY_S)
    with (
        private_redis(tmp_path) as broker,
        setup("postgres", broker.url, tmp_path, ANNOLOOP_BROKER_VISIBILITY_TIMEOUT=visibility) as w,
    ):
        client, h, factory = w.client, w.h, w.factory()
        pid = mlp_project(client, h, SCORED_DIM, batch_size=BATCH, model_spec=SCORED_MODEL)
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

        def scoring() -> bool:
            now = state()
            assert now in ("created", "training", "scoring"), now
            return now == "scoring"

        seen = kill_when(scoring, w.env, tmp_path / "worker-1.log")
        assert state() == "scoring"
        wait_until_redeliverable(seen)
        with factory() as db:
            assert db.scalars(select(QueueEntry).where(QueueEntry.cycle_id == cycle_id)).all() == []
        second_log = tmp_path / "worker-2.log"
        with process(["worker"], w.env, second_log):
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
    assert cycle["state"] == "labeling"
    assert cycle["attempts"] == 2  # the killed run, then the redelivered one
    assert len(cycles) == 1
    assert len(queued) == BATCH  # one set of entries, not two
    assert len(set(queued)) == BATCH
