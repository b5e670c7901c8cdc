"""The broker is down when the last label of a batch comes in (issue 15, item 5): the label
is stored and answered quickly, the ``advance`` task it sends is lost, and once Redis is back
the API's sweep (``app.cycles.reconcile``) re-sends it, so ``auto_advance`` starts the next
cycle. Redis is a private ``redis-server --save ''`` that comes back empty on the same port.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import make_engine, make_session_factory
from app.core.task_names import ADVANCE
from app.core.tasks import bound_sends
from app.cycles.models import Cycle
from app.main import create_app
from tests.backends import fresh_database
from tests.faults.services import private_redis
from tests.faults.world import add_members, mlp_project, seed_labels, settings_on, upload_features
from tests.integration.loop import accounts, bearer, wait_cycle, worker_env
from tests.integration.processes import process, wait_for
from worker.celery_app import create_celery

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
DIM, POOL, N_SEED, BATCH = 8, 200, 40, 4
SUBMIT_BOUND_S = 5.0  # it took 19 s, Celery retrying the result store a second apart
SEND_BOUND_S = 3.0


def test_the_next_cycle_starts_after_the_broker_returns(tmp_path: Path) -> None:
    with fresh_database("postgres", tmp_path) as db_url, private_redis(tmp_path) as broker:
        settings = settings_on(db_url, broker.url, tmp_path / "data").model_copy(
            update={"reconcile_interval_s": 1.0, "reconcile_grace_s": 2.0}
        )
        engine = make_engine(db_url)
        factory = make_session_factory(engine)
        admin, people = accounts(engine, settings, annotators=1)
        h, annotator = bearer(admin), bearer(people[0][1])

        def cycles(pid: int) -> list[tuple[int, str]]:
            with factory() as db:
                rows = db.execute(
                    select(Cycle.number, Cycle.state).where(Cycle.project_id == pid)
                ).all()
                return sorted((n, s.value) for n, s in rows)

        log = tmp_path / "worker.log"
        with (
            TestClient(create_app(settings, engine=engine)) as client,
            process(["worker"], worker_env(settings), log),
        ):
            pid = mlp_project(client, h, DIM, batch_size=BATCH, auto_advance=True)
            add_members(client, h, pid, [people[0][0]])
            upload_features(client, h, pid, POOL, DIM)
            seed_labels(client, h, pid, N_SEED)
            r = client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
            assert r.status_code == 202, r.text
            first = r.json()["id"]
            assert wait_cycle(client, h, pid, first, log, timeout=180)["state"] == "labeling"

            took = 0.0
            for n in range(BATCH):
                nxt = client.get(f"/api/v1/projects/{pid}/next", headers=annotator).json()
                assert nxt["status"] == "leased", nxt
                if n == BATCH - 1:
                    broker.kill()
                    # An earlier send in the outage (a sweep, another project's task).
                    with contextlib.suppress(Exception):
                        client.app.state.task_sender.send(ADVANCE.name, [pid], "default")
                t0 = time.monotonic()
                r = client.post(
                    f"/api/v1/items/{nxt['item']['id']}/annotations",
                    json={"class_index": 0},
                    headers=annotator,
                )
                took = time.monotonic() - t0
                assert r.status_code == 201, r.text
            print(f"last label with the broker down: {took:.2f} s")
            assert took < SUBMIT_BOUND_S

            time.sleep(4)  # sweeps that fail to send while Redis is down
            assert cycles(pid) == [(1, "labeling")]  # the advance task was lost
            broker.start()
            back = time.monotonic()
            wait_for(
                lambda: cycles(pid) == [(1, "completed"), (2, "labeling")] or None,
                180,
                "the next cycle to start and queue its batch",
                log,
            )
            print(f"next cycle labelling {time.monotonic() - back:.1f} s after Redis returned")
        engine.dispose()


def test_a_send_gives_up_quickly_while_the_broker_is_down(tmp_path: Path) -> None:
    # Celery's first failed send is quick; the later ones retried the Redis result store 20
    # times a second apart (19 s each) before ``bound_sends``.
    with private_redis(tmp_path) as broker:
        celery = create_celery(settings_on("sqlite://", broker.url, tmp_path / "data"))
        bound_sends(celery)
        celery.send_task(ADVANCE.name, args=[0], queue="default")
        broker.kill()
        for _ in range(3):
            t0 = time.monotonic()
            with contextlib.suppress(Exception):  # kombu's error or the result store's
                celery.send_task(ADVANCE.name, args=[0], queue="default")
            assert time.monotonic() - t0 < SEND_BOUND_S
