"""Projects over feature vectors for the tests where two projects' cycles share one worker
(``tests.integration.workers.setup`` gives them the database, the API and the worker's env)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi.testclient import TestClient


def project(client: TestClient, h: dict[str, str], name: str, epochs: int, labelled: int) -> int:
    """An MLP project over 300 feature vectors, ``labelled`` of them labelled; with batches of
    one, each epoch is ``labelled`` optimizer steps."""
    r = client.post(
        "/api/v1/projects",
        json={
            "name": name,
            "classes": ["a", "b"],
            "model_spec": {
                "name": "mlp",
                "input_shape": [8],
                "hparams": {"epochs": epochs, "batch_size": 1},
            },
            "strategy": "entropy",
            "batch_size": 5,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    features = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, features=features, external_ids=np.array([f"f{i}" for i in range(300)]))
    r = client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": ("f.npz", buf.getvalue(), "application/octet-stream")},
        headers=h,
    )
    assert r.status_code == 201, r.text
    rows = [
        {"external_id": f"f{i}", "annotator": "seed", "class_index": int(features[i, 0] > 0)}
        for i in range(labelled)
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    return pid


def cycle_of(client: TestClient, h: dict[str, str], pid: int, cid: int) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/projects/{pid}/cycles/{cid}", headers=h).json())


def in_state(
    client: TestClient, h: dict[str, str], pid: int, cid: int, state: str
) -> dict[str, Any] | None:
    cycle = cycle_of(client, h, pid, cid)
    return cycle if cycle["state"] == state else None


def start(client: TestClient, h: dict[str, str], pid: int) -> int:
    r = client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
    assert r.status_code == 202, r.text
    return int(r.json()["id"])
