"""A SimCLR run for a project whose model is a head on a frozen pretraining backbone
(``{"name": "pretrained", "hparams": {"backbone": "pretraining"}}``), all through the API and a
real ``celery worker`` process: the run trains the ``architecture`` it was asked for, a cycle
records it, and the embeddings the worker cached are that body's output, recomputed here from
the run's checkpoint."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.blobs import open_blob_store
from app.core.db import make_engine
from app.items.models import Item
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
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.ssl import encoder_state
from worker.ml.tensor_cache import TensorCache, item_key

pytestmark = pytest.mark.slow
N_POOL, N_TEST, SIDE = 24, 4, 16
SHAPE = [1, SIDE, SIDE]
SIMCLR = {"architecture": "small_cnn", "epochs": 2, "batch_size": 8, "seed": 4}


def _project(client: TestClient, h: dict[str, str], images: np.ndarray) -> int:
    spec = {
        "name": "pretrained",
        "input_shape": SHAPE,
        "hparams": {"backbone": "pretraining", "frozen": True, "epochs": 2, "batch_size": 8},
    }
    body = {"name": "simclr-frozen", "classes": ["a", "b"], "model_spec": spec, "batch_size": 2}
    r = client.post("/api/v1/projects", json=body, headers=h)
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    upload_npz(client, h, pid, images, ["pool"] * N_POOL + ["test"] * N_TEST)
    votes = [
        {"external_id": f"m{k}", "annotator": "seed", "class_index": k % 2}
        for k in [0, 1, 2, 3, *range(N_POOL, N_POOL + N_TEST)]
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=votes, headers=h)
    assert r.is_success, r.text
    return pid


def _pretrain(client: TestClient, h: dict[str, str], pid: int, log: Path) -> dict[str, Any]:
    r = client.post(f"/api/v1/projects/{pid}/pretraining", json=SIMCLR, headers=h)
    assert r.status_code == 202, r.text
    return wait_pretraining(client, h, pid, r.json()["id"], log)


def _cached_embeddings(cache_dir: Path, payloads: Sequence[str], run_sha: str) -> np.ndarray:
    """The rows the worker embedded these items into; decoding any here is a failure."""

    def never(positions: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        raise AssertionError(f"items {list(positions)} were never embedded by the worker")

    cache = TensorCache(cache_dir, 1 << 30)
    keys = [item_key(sha, "i") for sha in payloads]
    tag = f"embedding-{run_sha}-{'x'.join(map(str, SHAPE))}"
    return np.array(cache.rows(keys, (128,), np.float32, never, tag=tag))


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_simclr_run_serves_a_frozen_backbone_cycle(tmp_path: Path, backend: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, (N_POOL + N_TEST, SIDE, SIDE), np.uint8)
    with fresh_database(backend, tmp_path) as db_url:
        settings = settings_for("redis" if backend == "postgres" else "sqlite", db_url, tmp_path)
        engine = make_engine(db_url)
        h = bearer(accounts(engine, settings, annotators=0)[0])
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = _project(client, h, images)
            with process(["worker"], worker_env(settings, OMP_NUM_THREADS="1"), log):
                run = _pretrain(client, h, pid, log)
                r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": 1}, headers=h)
                assert r.status_code == 202, r.text
                cycle = wait_cycle(client, h, pid, r.json()["id"], log, timeout=180)
        with Session(engine) as db:
            stmt = select(Item.external_id, Item.blob_sha256).where(Item.project_id == pid)
            payload: dict[str, str] = dict(db.execute(stmt).all())
        engine.dispose()
    assert (run["method"], run["epochs_done"], run["items"], run["attempts"]) == (
        "simclr",
        2,
        N_POOL,
        1,
    )
    assert run["params"]["model"] == {"name": "small_cnn", "input_shape": SHAPE}
    assert (cycle["pretraining_id"], cycle["pretraining_sha256"]) == (
        run["id"],
        run["checkpoint_sha256"],
    )
    assert cycle["metrics"]["backbone"] == {
        "name": "pretraining",
        "sha256": run["checkpoint_sha256"],
    }
    assert "accuracy" in cycle["metrics"]["test"]

    # The trained small_cnn body, rebuilt here from the checkpoint alone.
    spec = ModelSpec.from_dict({"name": "small_cnn", "input_shape": SHAPE, "num_classes": 2})
    body = build_model(spec, seed=123).body.eval()
    body.load_state_dict(encoder_state(open_blob_store(settings).get(run["checkpoint_sha256"])))
    picked = [0, 5, N_POOL + 1]  # a labelled item, a candidate, a test item
    with torch.no_grad():
        x = torch.from_numpy(images[picked]).float().div(255.0).unsqueeze(1)
        expected = body(x).numpy()
    cached = _cached_embeddings(
        settings.tensor_cache, [payload[f"m{k}"] for k in picked], run["checkpoint_sha256"]
    )
    assert np.abs(expected).sum() > 0  # a dead body would match any zero rows
    np.testing.assert_allclose(cached, expected, rtol=1e-5, atol=1e-6)
