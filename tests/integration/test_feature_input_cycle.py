"""A cycle of a project whose model takes a named feature vector trains and scores on the
vectors, not on the images people see: images of noise, vectors that carry the class, and the
model reaches a test accuracy noise could not give it. Worker path in-process, SQLite."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import make_engine
from app.main import create_app
from tests.backends import fresh_sqlite
from tests.integration.loop import accounts, bearer
from tests.integration.test_shard_pipeline import Recorder
from worker.pipeline.acquire import run_acquire_cycle
from worker.pipeline.runtime import build_runtime

pytestmark = pytest.mark.slow
N_POOL, N_TEST, DIM, CLASSES = 200, 100, 6, 3


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_the_model_trains_on_the_named_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = N_POOL + N_TEST
    labels = rng.integers(0, CLASSES, n)
    images = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
    vectors = (3.0 * np.eye(DIM)[labels] + 0.3 * rng.standard_normal((n, DIM))).astype(np.float32)
    ids = np.array([f"r{i}" for i in range(n)])
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(environment="test", data_dir=tmp_path / "data", database_url=url)
        rt = build_runtime(settings)
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, 0)[0])
        with TestClient(create_app(settings, engine=engine, task_sender=Recorder())) as client:
            spec = {
                "name": "mlp",
                "input_shape": [DIM],
                "input": "emb",
                "hparams": {"epochs": 40, "batch_size": 16, "lr": 0.01},
            }
            body = {
                "name": "vectors",
                "classes": [f"c{c}" for c in range(CLASSES)],
                "model_spec": spec,
                "strategy": "margin",
                "batch_size": 5,
            }
            pid = client.post("/api/v1/projects", json=body, headers=h).json()["id"]
            split = np.array(["pool"] * N_POOL + ["test"] * N_TEST)
            upload = _npz(images=images, split=split, external_ids=ids)
            r = client.post(
                f"/api/v1/projects/{pid}/items:bulk",
                files={"archive": ("a.npz", upload, "application/octet-stream")},
                headers=h,
            )
            assert r.status_code == 201, r.text
            # The vectors come later, by external id.
            r = client.post(
                f"/api/v1/projects/{pid}/features:bulk",
                files={
                    "archive": (
                        "f.npz",
                        _npz(external_ids=ids, features_emb=vectors),
                        "application/octet-stream",
                    )
                },
                headers=h,
            )
            assert r.status_code == 201, r.text
            first = [
                int(np.flatnonzero(labels[:N_POOL] == c)[k]) for c in range(CLASSES) for k in (0, 1)
            ]
            votes = [
                {"external_id": f"r{i}", "annotator": "seed", "class_index": int(labels[i])}
                for i in [*first, *range(N_POOL, n)]
            ]
            r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=votes, headers=h)
            assert r.is_success, r.text
            r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": 1}, headers=h)
            cycle_id = r.json()["id"]
            assert run_acquire_cycle(rt, cycle_id, sender=Recorder()) == "queued 5 items"
            cycle = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}", headers=h).json()
        engine.dispose()
    # Six labelled vectors of well separated classes: nearly every test item right; the noise
    # images would leave it near 1/3.
    assert cycle["metrics"]["test"]["accuracy"] > 0.9, cycle["metrics"]
