from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import Accounts

CLASSES = [str(d) for d in range(10)]
SMALL_CNN = {"name": "small_cnn", "input_shape": [1, 28, 28], "hparams": {"epochs": 2}}


def png_bytes(seed: int = 0, size: tuple[int, int] = (28, 28), mode: str = "L") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), "RGB").save(buf, "JPEG")
    return buf.getvalue()


def create_project(
    client: TestClient, accounts: Accounts, who: str = "engineer", **overrides: Any
) -> dict[str, Any]:
    body = {"name": "digits", "classes": CLASSES, "model_spec": SMALL_CNN, **overrides}
    r = client.post("/api/v1/projects", json=body, headers=accounts.h(who))
    assert r.status_code == 201, r.text
    return dict(r.json())


def upload_png(
    client: TestClient,
    accounts: Accounts,
    project_id: int,
    seed: int = 0,
    split: str = "pool",
    external_id: str | None = None,
) -> dict[str, Any]:
    data = {"split": split}
    if external_id:
        data["external_id"] = external_id
    r = client.post(
        f"/api/v1/projects/{project_id}/items",
        files={"file": (f"img{seed}.png", png_bytes(seed), "image/png")},
        data=data,
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def add_member(client: TestClient, accounts: Accounts, project_id: int, who: str) -> None:
    r = client.post(
        f"/api/v1/projects/{project_id}/members",
        json={"annotator_id": accounts.ids[who]},
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 204, r.text
