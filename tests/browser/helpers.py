"""What the browser tests share: the demo server's handle, API calls made with httpx (to set
up and to check what the browser did), the demo's true digits, and screenshots."""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from app.demo.seed import load_demo_arrays
from tests.integration.processes import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DOC_SHOTS = ROOT / "docs" / "screenshots"


@dataclass(frozen=True)
class Demo:
    base: str
    admin: str  # token
    annotator: str  # token
    project_id: int
    log: Path

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.base}/api/v1",
            headers={"Authorization": f"Bearer {token or self.admin}"},
            timeout=30,
        )


def call(client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    r = client.request(method, path, **kw)
    assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
    return r.json() if r.content else None


def cycles(demo: Demo, project_id: int) -> list[dict[str, Any]]:
    with demo.api() as c:
        return list(call(c, "GET", f"/projects/{project_id}/cycles"))


def wait_for_cycle(
    demo: Demo, project_id: int, number: int, state: str, timeout: float = 120
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        for cycle in cycles(demo, project_id):
            if cycle["number"] == number:
                assert cycle["state"] != "failed", cycle["error"]
                if cycle["state"] == state:
                    return cycle
        return None

    return wait_for(reached, timeout, f"cycle {number} to be {state}", demo.log)


@cache
def _true_digits() -> np.ndarray:
    return load_demo_arrays()[1]


def true_digit(external_id: str) -> int:
    """The demo's items are ``mnist-00042``: position 42 of the shipped arrays."""
    return int(_true_digits()[int(external_id.rsplit("-", 1)[1])])


def label_queue_via_api(demo: Demo, project_id: int, token: str, limit: int | None = None) -> int:
    """Label (with the true digit) what the queue offers this person, everything or ``limit``
    items (a lease they hold comes first); returns how many."""
    n = 0
    with demo.api(token) as c:
        while limit is None or n < limit:
            out = call(c, "GET", f"/projects/{project_id}/next")
            if out["status"] != "leased":
                return n
            body = {
                "class_index": true_digit(out["item"]["external_id"]),
                "idempotency_key": uuid.uuid4().hex,
            }
            call(c, "POST", f"/items/{out['item']['id']}/annotations", json=body)
            n += 1
    return n


def human_annotations(demo: Demo, project_id: int, annotator_id: int) -> list[dict[str, Any]]:
    """Every human annotation (retracted ones too) this person made in the project, oldest
    first, read back through the API with the admin token."""
    rows: list[dict[str, Any]] = []
    cursor = None
    with demo.api() as c:
        while True:
            params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = call(c, "GET", f"/projects/{project_id}/annotations", params=params)
            rows += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
    mine = [r for r in rows if r["annotator_id"] == annotator_id and r["source"] == "human"]
    return sorted(mine, key=lambda r: r["id"])


def create_project_with_items(
    demo: Demo,
    name: str,
    n_items: int,
    batch_size: int,
    model_spec: dict[str, Any] | None = None,
) -> int:
    """A fresh MNIST project (random strategy) whose first cycle will queue ``batch_size``;
    its model a one-epoch small CNN unless ``model_spec`` says otherwise."""
    images, _ = load_demo_arrays()
    spec = model_spec or {"name": "small_cnn", "input_shape": [1, 28, 28], "hparams": {"epochs": 1}}
    with demo.api() as c:
        project = call(
            c,
            "POST",
            "/projects",
            json={
                "name": name,
                "classes": [str(d) for d in range(10)],
                "model_spec": spec,
                "strategy": "random",
                "batch_size": batch_size,
            },
        )
        buf = io.BytesIO()
        ids = np.array([f"mnist-{i:05d}" for i in range(n_items)])
        np.savez(buf, images=images[:n_items], external_ids=ids)
        files = {"archive": ("items.npz", buf.getvalue(), "application/octet-stream")}
        call(c, "POST", f"/projects/{project['id']}/items:bulk", files=files)
        return int(project["id"])


def add_member(demo: Demo, project_id: int, token: str) -> int:
    with demo.api(token) as c:
        person = call(c, "GET", "/me")
    with demo.api() as c:
        call(c, "POST", f"/projects/{project_id}/members", json={"annotator_id": person["id"]})
    return int(person["id"])


def screenshot(page: Page, name: str, doc: bool = False) -> Path:
    """Save test-artifacts/browser/NAME.png; with ``doc`` and ANNOLOOP_UPDATE_SCREENSHOTS=1 also
    refresh docs/screenshots/NAME.png (palette PNG: small enough to commit)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if doc and os.environ.get("ANNOLOOP_UPDATE_SCREENSHOTS") == "1":
        from PIL import Image

        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
            small.save(DOC_SHOTS / f"{name}.png", optimize=True)
    return path
