from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.enums import CycleState, ProjectKind
from app.cycles.models import Cycle
from app.queue.models import QueueEntry
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


def open_batch(
    factory: sessionmaker[Session],
    project_id: int,
    item_ids: list[int],
    labels_wanted: int = 1,
    stop_lead: int | None = None,
    strategy: str = "random",
) -> int:
    """Put a cycle in ``labeling`` with these items queued, as the worker would leave it."""
    with factory() as db:
        number = (
            db.scalar(select(func.max(Cycle.number)).where(Cycle.project_id == project_id)) or 0
        ) + 1
        cycle = Cycle(
            project_id=project_id,
            number=number,
            kind=ProjectKind.acquire,
            state=CycleState.labeling,
            strategy=strategy,
            params={},
            seed=0,
            batch_size=len(item_ids),
        )
        db.add(cycle)
        db.flush()
        db.add_all(
            QueueEntry(
                project_id=project_id,
                cycle_id=cycle.id,
                item_id=item_id,
                rank=rank,
                score=float(len(item_ids) - rank),
                labels_wanted=labels_wanted,
                stop_lead=stop_lead,
            )
            for rank, item_id in enumerate(item_ids)
        )
        db.commit()
        return cycle.id


def lease_next(client: TestClient, accounts: Accounts, project_id: int, who: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/projects/{project_id}/next", headers=accounts.h(who))
    assert r.status_code == 200, r.text
    return dict(r.json())


def label_next(client: TestClient, accounts: Accounts, project_id: int, who: str, k: int) -> int:
    """Lease the next item as ``who`` and label it ``k``; returns the item's id."""
    item = lease_next(client, accounts, project_id, who)["item"]["id"]
    r = client.post(
        f"/api/v1/items/{item}/annotations", json={"class_index": k}, headers=accounts.h(who)
    )
    assert r.status_code == 201, r.text
    return int(item)
