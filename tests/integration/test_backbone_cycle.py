"""Cycles on a pretrained backbone through the worker path (in-process, SQLite): frozen, the
embeddings of every item are computed once and the next cycle computes none; fine-tuned, the
backbone trains with the head. The weights file is one the test writes."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import make_engine
from app.main import create_app
from tests.backends import fresh_sqlite
from tests.integration.loop import accounts, bearer
from tests.integration.test_shard_pipeline import Recorder
from tests.integration.test_tensor_cache_cycle import RecordingCache
from worker.pipeline.acquire import run_acquire_cycle
from worker.pipeline.runtime import build_runtime

pytestmark = pytest.mark.slow
N_POOL, N_TEST, BATCH = 60, 20, 4


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _project(client: TestClient, h: dict[str, str], name: str, frozen: bool) -> int:
    spec = {
        "name": "pretrained",
        "input_shape": [3, 32, 32],
        "hparams": {"backbone": "small", "frozen": frozen, "epochs": 2, "batch_size": 8},
    }
    body = {"name": name, "classes": ["a", "b"], "model_spec": spec, "batch_size": BATCH}
    r = client.post("/api/v1/projects", json=body, headers=h)
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    rng = np.random.default_rng(0)
    n = N_POOL + N_TEST
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    split = np.array(["pool"] * N_POOL + ["test"] * N_TEST)
    files = {
        "archive": (
            "a.npz",
            _npz(images=images, split=split, external_ids=np.array([f"i{k}" for k in range(n)])),
            "x",
        )
    }
    assert client.post(f"/api/v1/projects/{pid}/items:bulk", files=files, headers=h).is_success
    votes = [
        {"external_id": f"i{k}", "annotator": "seed", "class_index": k % 2}
        for k in [0, 1, 2, 3, *range(N_POOL, n)]
    ]
    assert client.post(
        f"/api/v1/projects/{pid}/annotations:import", json=votes, headers=h
    ).is_success
    return pid


def test_frozen_embeddings_once_and_a_fine_tuned_cycle(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "small.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    config = {"small": {"arch": "mobilenet_v3_small", "weights": str(weights), "sha256": sha}}
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(
            environment="test",
            data_dir=tmp_path / "data",
            database_url=url,
            backbones=json.dumps(config),
        )
        cache = RecordingCache(settings.tensor_cache, 1 << 30)
        rt = dataclasses.replace(build_runtime(settings), tensors=cache)
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, 0)[0])
        with TestClient(create_app(settings, engine=engine, task_sender=Recorder())) as client:
            pid = _project(client, h, "frozen", frozen=True)

            def cycle(project: int, seed: int) -> dict[str, Any]:
                for c in client.get(f"/api/v1/projects/{project}/cycles", headers=h).json():
                    if c["state"] == "labeling":
                        client.post(
                            f"/api/v1/projects/{project}/cycles/{c['id']}/cancel", headers=h
                        )
                r = client.post(
                    f"/api/v1/projects/{project}/cycles", json={"seed": seed}, headers=h
                )
                assert r.status_code == 202, r.text
                assert (
                    run_acquire_cycle(rt, r.json()["id"], sender=Recorder())
                    == f"queued {BATCH} items"
                )
                return dict(
                    client.get(
                        f"/api/v1/projects/{project}/cycles/{r.json()['id']}", headers=h
                    ).json()
                )

            first = cycle(pid, 1)
            assert "accuracy" in first["metrics"]["test"]
            assert first["metrics"]["backbone"] == {"name": "small", "sha256": sha}
            # Every item embedded once (labelled, candidates, test), as 576 float32 features.
            assert sum(s.decoded for s in cache.builds) == N_POOL + N_TEST
            rows = list(settings.tensor_cache.glob("*float32/*.rows"))
            assert rows
            assert all(p.stat().st_size % (576 * 4) == 0 for p in rows)
            cache.builds.clear()
            cycle(pid, 2)  # another seed, the same items: every embedding comes from the cache
            assert sum(s.decoded for s in cache.builds) == 0
            assert len(cache.builds) >= 2

            tuned = _project(client, h, "tuned", frozen=False)
            cache.builds.clear()
            result = cycle(tuned, 1)
            assert result["checkpoint_sha256"]
            # Fine-tuned models read images (uint8 rows), not embeddings.
            assert sum(s.decoded for s in cache.builds) == N_POOL + N_TEST
        engine.dispose()
