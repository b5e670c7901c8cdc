"""SIGTERM to a worker in the middle of training (what ``docker stop`` sends to the
container's main process): Celery's warm shutdown finishes the cycle, then exits cleanly."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from app.auth.service import create_annotator, issue_token
from app.core.config import Settings
from app.core.db import make_engine, make_session_factory, unit_of_work
from app.core.enums import Role
from app.demo.seed import load_demo_arrays
from app.main import create_app
from tests.backends import fresh_postgres
from tests.deploy.test_compose import _local_redis
from tests.integration.processes import env_for, process, wait_for

pytestmark = pytest.mark.slow
N_POOL = 100


def _cycle(client: TestClient, h: dict[str, str]) -> tuple[int, int]:
    images, labels = load_demo_arrays()
    r = client.post(
        "/api/v1/projects",
        json={
            "name": "shutdown",
            "classes": [str(d) for d in range(10)],
            # Long enough that the SIGTERM lands while it trains.
            "model_spec": {
                "name": "small_cnn",
                "input_shape": [1, 28, 28],
                "hparams": {"epochs": 150, "batch_size": 4},
            },
            "strategy": "entropy",
            "batch_size": 5,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    buf = io.BytesIO()
    np.savez(buf, images=images[:N_POOL], external_ids=np.array([f"s{i}" for i in range(N_POOL)]))
    r = client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": ("s.npz", buf.getvalue(), "application/octet-stream")},
        headers=h,
    )
    assert r.status_code == 201, r.text
    rows = [
        {"external_id": f"s{i}", "annotator": "seed", "class_index": int(labels[i])}
        for i in range(20)
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
    assert r.status_code == 202, r.text
    return pid, r.json()["id"]


def test_sigterm_lets_the_running_cycle_finish(tmp_path: Path) -> None:
    broker = _local_redis(13)  # not 14 (the compose and sharding tests) nor 15
    redis.Redis.from_url(broker).flushdb()
    with fresh_postgres() as db_url:
        settings = Settings(
            environment="test",
            data_dir=tmp_path / "data",
            database_url=db_url,
            broker_url=broker,
            result_backend=broker,
        )
        engine = make_engine(db_url)
        with unit_of_work(make_session_factory(engine)) as db:
            admin = create_annotator(db, actor=None, name="admin", role=Role.admin)
            token, _ = issue_token(db, admin, settings.secret_key)
        h = {"Authorization": f"Bearer {token}"}
        env = env_for(
            {
                "ANNOLOOP_DATA_DIR": str(settings.data_dir),
                "ANNOLOOP_DATABASE_URL": db_url,
                "ANNOLOOP_BROKER_URL": broker,
                "ANNOLOOP_RESULT_BACKEND": broker,
                "ANNOLOOP_LOG_FORMAT": "json",
                # Two torch threads beside any other busy process ran 13x slower in CI (147 s
                # against 11 s alone); one thread keeps the training short and steady.
                "OMP_NUM_THREADS": "1",
            }
        )
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            pid, cycle_id = _cycle(client, h)

            def state() -> str:
                c = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}", headers=h).json()
                assert c["state"] != "failed", c["error"]
                return str(c["state"])

            with process(["worker"], env, log) as worker:
                wait_for(lambda: state() == "training" or None, 180, "training to start", log)
                os.kill(worker.pid, signal.SIGTERM)  # the main process only, like docker stop
                exit_code = worker.wait(240)
            cycle = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}", headers=h).json()
        engine.dispose()

    assert exit_code == 0, log.read_text()[-3000:]
    assert cycle["state"] == "labeling"
    assert cycle["attempts"] == 1  # finished by the same worker, not redelivered
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    order: list[Any] = [
        line["message"]
        for line in lines
        if line["message"] in ("worker shutting down", "cycle task finished")
    ]
    assert order == ["worker shutting down", "cycle task finished"]
    shutdown = next(line for line in lines if line["message"] == "worker shutting down")
    assert shutdown["how"] == "Warm"
