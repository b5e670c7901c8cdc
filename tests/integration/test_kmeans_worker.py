"""A patch k-means pretraining run in a real ``celery worker`` process, then cycles whose model
is a head on its frozen encoder (``backbone: "pretraining"``): an acquisition cycle and a
cleaning cycle reach their next state and record the run; every item is embedded once (the
worker logs each embedding pass), and a second cycle and the fold models read the cache."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.blobs import open_blob_store
from app.core.db import make_engine
from app.main import create_app
from tests.backends import fresh_database
from tests.integration.loop import (
    accounts,
    bearer,
    settings_for,
    upload_npz,
    wait_cycle,
    wait_pretraining,
    worker_env,
)
from tests.integration.processes import process
from worker.ml.run_encoders import load_kmeans

pytestmark = pytest.mark.slow
N_POOL, N_TEST, SIDE, CENTROIDS = 16, 4, 16, 8
KMEANS = {"method": "patch_kmeans", "centroids": CENTROIDS, "patches": 500, "seed": 3}
EMBEDDED = re.compile(r"embedding (\d+) item\(s\) \(([0-9a-f]{12})\)")


def _project(client: TestClient, h: dict[str, str], seed: int, clean: bool) -> int:
    spec = {
        "name": "pretrained",
        "input_shape": [3, SIDE, SIDE],
        "hparams": {"backbone": "pretraining", "epochs": 2, "batch_size": 8},
    }
    body: dict[str, Any] = {"name": f"km-{seed}", "classes": ["a", "b"], "model_spec": spec}
    body |= {"batch_size": 2}
    if clean:
        body |= {"kind": "clean", "crossfit_folds": 2, "relabel_budget": 4}
        body |= {"strategy": "ce_minus_entropy"}
    r = client.post("/api/v1/projects", json=body, headers=h)
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (N_POOL + N_TEST, SIDE, SIDE, 3), dtype=np.uint8)
    upload_npz(client, h, pid, images, ["pool"] * N_POOL + ["test"] * N_TEST)
    labelled = range(N_POOL) if clean else range(4)
    votes = [
        {"external_id": f"m{k}", "annotator": "seed", "class_index": k % 2}
        for k in [*labelled, *range(N_POOL, N_POOL + N_TEST)]
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=votes, headers=h)
    assert r.is_success, r.text
    return pid


def _fit(client: TestClient, h: dict[str, str], pid: int, log: Path) -> dict[str, Any]:
    r = client.post(f"/api/v1/projects/{pid}/pretraining", json=KMEANS, headers=h)
    assert r.status_code == 202, r.text
    return wait_pretraining(client, h, pid, r.json()["id"], log)


def _cycle(client: TestClient, h: dict[str, str], pid: int, log: Path, seed: int) -> Any:
    r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": seed}, headers=h)
    assert r.status_code == 202, r.text
    return wait_cycle(client, h, pid, r.json()["id"], log, timeout=180)


def _embedded(log: Path, sha: str) -> int:
    """Items the worker has embedded with the run's encoder so far."""
    return sum(int(n) for n, who in EMBEDDED.findall(log.read_text()) if sha.startswith(who))


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_kmeans_run_then_frozen_cycles_embed_once(tmp_path: Path, backend: str) -> None:
    with fresh_database(backend, tmp_path) as db_url:
        settings = settings_for("redis" if backend == "postgres" else "sqlite", db_url, tmp_path)
        engine = make_engine(db_url)
        h = bearer(accounts(engine, settings, annotators=0)[0])
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = _project(client, h, seed=0, clean=False)
            clean_pid = _project(client, h, seed=1, clean=True)
            with process(["worker"], worker_env(settings, OMP_NUM_THREADS="1"), log):
                run = _fit(client, h, pid, log)
                first = _cycle(client, h, pid, log, seed=1)
                after_first = _embedded(log, run["checkpoint_sha256"])
                url = f"/api/v1/projects/{pid}/cycles/{first['id']}/cancel"
                assert client.post(url, headers=h).is_success
                second = _cycle(client, h, pid, log, seed=2)

                clean_run = _fit(client, h, clean_pid, log)
                cleaned = _cycle(client, h, clean_pid, log, seed=1)
        engine.dispose()
    assert (run["method"], run["epochs_done"], run["epochs"]) == ("patch_kmeans", 1, 1)
    assert (run["items"], run["attempts"], run["error"]) == (N_POOL, 1, None)
    encoder = load_kmeans(open_blob_store(settings).get(run["checkpoint_sha256"]))
    assert encoder.feature_dim == 4 * CENTROIDS
    for cycle, used in [(first, run), (second, run), (cleaned, clean_run)]:
        assert (cycle["pretraining_id"], cycle["pretraining_sha256"]) == (
            used["id"],
            used["checkpoint_sha256"],
        )
    assert first["metrics"]["backbone"] == {
        "name": "pretraining",
        "sha256": run["checkpoint_sha256"],
    }
    assert "accuracy" in first["metrics"]["test"]
    # Every item once (labelled, candidates, test); the second cycle read them all back.
    assert after_first == N_POOL + N_TEST
    assert _embedded(log, run["checkpoint_sha256"]) == N_POOL + N_TEST
    # The cleaning cycle's model and its two fold models share one embedding of each item.
    assert _embedded(log, clean_run["checkpoint_sha256"]) == N_POOL + N_TEST
    assert cleaned["state"] in ("labeling", "completed")
