"""The engineer's loop through the API alone, on Postgres + Redis with a real worker: three
acquisition cycles on MNIST digits, an oracle answering, a different strategy per cycle,
and test accuracy going up as labels come in."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.db import make_engine
from app.demo.seed import load_demo_arrays
from app.main import create_app
from tests.backends import fresh_database
from tests.integration.loop import (
    accounts,
    bearer,
    label_until,
    settings_for,
    upload_npz,
    wait_cycle,
    worker_env,
)
from tests.integration.processes import process

pytestmark = pytest.mark.slow
N_POOL, N_TEST, BATCH = 1200, 400, 40
STRATEGIES = ["entropy", "margin", "coreset"]


def test_three_cycles_with_an_oracle_improve_accuracy(tmp_path: Path) -> None:
    images, truth = load_demo_arrays()
    images, truth = images[: N_POOL + N_TEST], truth[: N_POOL + N_TEST].astype(int)
    with fresh_database("postgres", tmp_path) as db_url:
        settings = settings_for("redis", db_url, tmp_path / "data")
        engine = make_engine(db_url)
        admin, people = accounts(engine, settings, annotators=2)
        h = bearer(admin)
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            r = client.post(
                "/api/v1/projects",
                json={
                    "name": "mnist",
                    "classes": [str(d) for d in range(10)],
                    "model_spec": {
                        "name": "small_cnn",
                        "input_shape": [1, 28, 28],
                        "hparams": {"epochs": 25, "batch_size": 16},
                    },
                    "batch_size": BATCH,
                    "seed": 3,
                },
                headers=h,
            )
            pid = r.json()["id"]
            for person_id, _ in people:
                client.post(
                    f"/api/v1/projects/{pid}/members", json={"annotator_id": person_id}, headers=h
                )
            upload_npz(client, h, pid, images, ["pool"] * N_POOL + ["test"] * N_TEST)
            seed = [int(i) for d in range(10) for i in (truth[:N_POOL] == d).nonzero()[0][:2]]
            rows = [
                {"external_id": f"m{i}", "annotator": "seed", "class_index": int(truth[i])}
                for i in seed
            ]
            rows += [
                {"external_id": f"m{i}", "annotator": "truth", "class_index": int(truth[i])}
                for i in range(N_POOL, N_POOL + N_TEST)
            ]
            client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)

            cycles = []
            with process(["worker"], worker_env(settings), log):
                for n, strategy in enumerate(STRATEGIES):
                    started = client.post(
                        f"/api/v1/projects/{pid}/cycles", json={"strategy": strategy}, headers=h
                    )
                    assert started.status_code == 202, started.text
                    cycle = wait_cycle(client, h, pid, started.json()["id"], log)
                    cycles.append(cycle)
                    if n < len(STRATEGIES) - 1:
                        given = label_until(
                            client,
                            pid,
                            [t for _, t in people],
                            answer=lambda item: int(truth[int(item["external_id"][1:])]),
                            stop=lambda nxt: nxt["status"] == "queue_empty",
                        )
                        assert given == BATCH
        engine.dispose()

    accuracy = [c["metrics"]["test"]["accuracy"] for c in cycles]
    labels = [c["metrics"]["labels"] for c in cycles]
    print("labels", labels, "accuracy", accuracy)
    assert labels == [20, 20 + BATCH, 20 + 2 * BATCH]
    assert [c["strategy"] for c in cycles] == STRATEGIES
    assert [c["metrics"]["strategy_used"] for c in cycles] == STRATEGIES
    assert accuracy[-1] > accuracy[0]
    assert accuracy[1] > accuracy[0]
