"""A small feature-vector project (the MLP trains in a second) for the fault tests."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from app.core.config import Settings

Client = TestClient | httpx.Client
CLASSES = [str(d) for d in range(10)]


def settings_on(db_url: str, broker_url: str | None, data_dir: Any) -> Settings:
    """Settings for a database and a Redis broker (None: the embedded SQLite broker)."""
    if broker_url is None:
        return Settings(environment="test", data_dir=data_dir, database_url=db_url)
    return Settings(
        environment="test",
        data_dir=data_dir,
        database_url=db_url,
        broker_url=broker_url,
        result_backend=broker_url,
    )


def mlp_project(client: Client, h: dict[str, str], dim: int, **extra: Any) -> int:
    body = {
        "name": f"faults-{uuid.uuid4().hex[:6]}",
        "classes": CLASSES,
        "model_spec": {"name": "mlp", "input_shape": [dim], "hparams": {"epochs": 3}},
        **extra,
    }
    r = client.post("/api/v1/projects", json=body, headers=h)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def features_npz(n: int, dim: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(
        buf,
        features=rng.standard_normal((n, dim)).astype(np.float32),
        external_ids=np.array([f"f{i}" for i in range(n)]),
    )
    return buf.getvalue()


def upload_features(client: Client, h: dict[str, str], pid: int, n: int, dim: int) -> list[int]:
    """``n`` pool items; returns their ids in upload order."""
    r = client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": ("pool.npz", features_npz(n, dim), "application/octet-stream")},
        headers=h,
    )
    assert r.status_code == 201, r.text
    first, last = r.json()["first_id"], r.json()["last_id"]
    return list(range(first, last + 1))


def seed_labels(client: Client, h: dict[str, str], pid: int, n: int) -> None:
    """Import labels for the first ``n`` items, so a cycle trains instead of cold-starting."""
    rows = [{"external_id": f"f{i}", "annotator": "seed", "class_index": i % 10} for i in range(n)]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text


def add_members(client: Client, h: dict[str, str], pid: int, people: list[int]) -> None:
    for person in people:
        r = client.post(f"/api/v1/projects/{pid}/members", json={"annotator_id": person}, headers=h)
        assert r.status_code == 204, r.text


# A pool and strategy whose scoring lasts about a second on 2 idle cores (longer under load):
# long enough for a test polling every 50 ms to act while the cycle is `scoring`.
SCORED_DIM, SCORED_POOL = 64, 2000
SCORED_MODEL = {
    "name": "mlp",
    "input_shape": [SCORED_DIM],
    "hparams": {"epochs": 2, "hidden_sizes": [256, 256]},
}
SLOW_SCORING = {"strategy": "noise_stability", "params": {"num_samples": 80}}
