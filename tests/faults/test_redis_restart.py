"""Redis (the broker) killed and restarted empty while a worker runs a cycle: the worker
reconnects, the cycle reaches labelling, and once its batch is labelled the ``advance``
task goes through the restarted broker and the cycle completes.

Redis is a private ``redis-server --save ''`` (``tests/faults/services.py``): killing it
loses every message it held, the harshest restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.cycles.models import Cycle
from tests.faults.services import private_redis
from tests.faults.world import (
    SCORED_DIM,
    SCORED_MODEL,
    SCORED_POOL,
    SLOW_SCORING,
    add_members,
    mlp_project,
    seed_labels,
    upload_features,
)
from tests.integration.loop import bearer, wait_cycle
from tests.integration.processes import process, wait_for
from tests.integration.workers import setup

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
N_SEED, BATCH = 100, 10
DOWN_SECONDS = 2.0


def test_a_cycle_completes_after_the_broker_restarts(tmp_path: Path) -> None:
    with (
        private_redis(tmp_path) as broker,
        setup("postgres", broker.url, tmp_path, annotators=1) as w,
    ):
        client, h, factory, log = w.client, w.h, w.factory(), w.log
        annotator = bearer(w.people[0][1])
        pid = mlp_project(client, h, SCORED_DIM, batch_size=BATCH, model_spec=SCORED_MODEL)
        add_members(client, h, pid, [w.people[0][0]])
        upload_features(client, h, pid, SCORED_POOL, SCORED_DIM)
        seed_labels(client, h, pid, N_SEED)

        def state(cycle_id: int) -> str:
            with factory() as db:
                cycle = db.get(Cycle, cycle_id)
                assert cycle is not None
                return cycle.state.value

        with process(["worker"], w.env, log) as worker:
            r = client.post(f"/api/v1/projects/{pid}/cycles", json=SLOW_SCORING, headers=h)
            assert r.status_code == 202, r.text
            cycle_id = r.json()["id"]
            deadline = time.monotonic() + 180
            while (now := state(cycle_id)) != "scoring":  # the task is in the worker's hands
                assert now in ("created", "training"), now
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
            broker.kill()
            time.sleep(DOWN_SECONDS)
            broker.start()
            cycle = wait_cycle(client, h, pid, cycle_id, log, timeout=180)
            assert cycle["state"] == "labeling"

            for _ in range(BATCH):  # the last label sends `advance` through the new Redis
                nxt = client.get(f"/api/v1/projects/{pid}/next", headers=annotator).json()
                assert nxt["status"] == "leased", nxt
                r = client.post(
                    f"/api/v1/items/{nxt['item']['id']}/annotations",
                    json={"class_index": 0},
                    headers=annotator,
                )
                assert r.status_code == 201, r.text
            wait_for(
                lambda: state(cycle_id) == "completed" or None,
                120,
                "the cycle to complete",
                log,
            )
            assert worker.poll() is None  # the worker lived through the outage
