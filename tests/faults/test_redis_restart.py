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
from fastapi.testclient import TestClient

from app.core.db import make_engine, make_session_factory
from app.cycles.models import Cycle
from app.main import create_app
from tests.backends import fresh_database
from tests.faults.services import private_redis
from tests.faults.world import (
    SCORED_DIM,
    SCORED_MODEL,
    SCORED_POOL,
    SLOW_SCORING,
    add_members,
    mlp_project,
    seed_labels,
    settings_on,
    upload_features,
)
from tests.integration.loop import accounts, bearer, wait_cycle, worker_env
from tests.integration.processes import process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
N_SEED, BATCH = 100, 10
DOWN_SECONDS = 2.0


def test_a_cycle_completes_after_the_broker_restarts(tmp_path: Path) -> None:
    with fresh_database("postgres", tmp_path) as db_url, private_redis(tmp_path) as broker:
        settings = settings_on(db_url, broker.url, tmp_path / "data")
        engine = make_engine(db_url)
        factory = make_session_factory(engine)
        admin, people = accounts(engine, settings, annotators=1)
        h, annotator = bearer(admin), bearer(people[0][1])
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = mlp_project(
                client,
                h,
                SCORED_DIM,
                batch_size=BATCH,
                model_spec=SCORED_MODEL,
            )
            add_members(client, h, pid, [people[0][0]])
            upload_features(client, h, pid, SCORED_POOL, SCORED_DIM)
            seed_labels(client, h, pid, N_SEED)

            def state(cycle_id: int) -> str:
                with factory() as db:
                    cycle = db.get(Cycle, cycle_id)
                    assert cycle is not None
                    return cycle.state.value

            log = tmp_path / "worker.log"
            with process(["worker"], worker_env(settings), log) as worker:
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
        engine.dispose()
