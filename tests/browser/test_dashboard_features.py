"""The dashboard says what a project's model reads (issue 19): a project on named feature
vectors shows the vector it takes and every vector's length and coverage, as the API reports
them; an image project says its model reads the images."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from tests.browser.helpers import Demo, call, screenshot
from tests.browser.pages import sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

NewPage = Callable[..., "Page"]


def _archive(n: int) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(
        buf,
        images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        external_ids=np.array([f"f{i}" for i in range(n)]),
        features_emb=rng.standard_normal((n, 8)).astype(np.float32),
    )
    return buf.getvalue()


def test_the_dashboard_shows_the_models_input_and_the_feature_vectors(
    demo: Demo, new_page: NewPage
) -> None:
    spec = {"name": "mlp", "input_shape": [8], "input": "emb", "hparams": {"epochs": 1}}
    with demo.api() as c:
        project = call(
            c,
            "POST",
            "/projects",
            json={"name": "on embeddings", "classes": ["a", "b"], "model_spec": spec},
        )
        pid = project["id"]
        call(
            c,
            "POST",
            f"/projects/{pid}/items:bulk",
            files={"archive": ("a.npz", _archive(6), "application/octet-stream")},
        )
        (expected,) = call(c, "GET", f"/projects/{pid}/features")
    page = new_page(1280, 1200)
    sign_in(page, demo.base, demo.admin)
    page.goto(f"{demo.base}/dashboard.html?project={pid}")
    row = page.locator('#features-table tr[data-feature="emb"]')
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert cells == ["emb", "8", str(expected["items"]), str(expected["missing"]), "yes"]
    assert expected["items"] == 6
    assert page.locator("#model-input").inner_text() == 'feature vector "emb"'
    screenshot(page, "dashboard-features")

    page.goto(f"{demo.base}/dashboard.html?project={demo.project_id}")
    page.locator("#card-features", has_text="No feature vectors").wait_for()
    assert page.locator("#model-input").inner_text() == "the images"
