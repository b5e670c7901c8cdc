"""The dashboard's pretraining card in a real browser: a refused start says which key is wrong,
a good one queues a SimCLR run on the demo's pool, and its row follows it to done with its
epoch count and loss, as the API reports them; then the method select switches the form to
patch k-means (only its fields shown and sent), whose run is one step. A project whose model is
a frozen backbone (``pretrained``) has no body of its own: only its form asks which body SimCLR
trains, shows the API's 422 when none is chosen, and sends the chosen one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.browser.helpers import Demo, call, create_project_with_items, screenshot
from tests.browser.pages import sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow

NewPage = Callable[..., "Page"]


def test_engineer_starts_pretraining_and_follows_its_progress(
    demo: Demo, new_page: NewPage
) -> None:
    pid = demo.project_id
    page = new_page(1280, 1200)
    sign_in(page, demo.base, demo.admin)
    page.goto(f"{demo.base}/dashboard.html?project={pid}")
    page.locator("#card-pretraining #pretraining-runs").wait_for()
    assert page.locator("#pretrain-architecture").count() == 0  # small_cnn trains its own

    page.fill("#pretrain-epochs", "1")
    page.fill("#pretrain-batch_size", "256")
    page.fill("#pretrain-temperature", "0")
    page.locator("#start-pretraining").click()
    page.locator("#pretrain-status.error", has_text="temperature").wait_for()
    with demo.api() as c:
        assert call(c, "GET", f"/projects/{pid}/pretraining") == []  # nothing stored

    page.fill("#pretrain-temperature", "0.5")
    page.fill("#pretrain-seed", "4")
    page.locator("#start-pretraining").click()
    page.locator("#pretrain-status", has_text="queued").wait_for()
    done = page.locator('#pretraining-table tr[data-status="done"]')
    done.wait_for(timeout=180_000)
    with demo.api() as c:
        (run,) = call(c, "GET", f"/projects/{pid}/pretraining")
    assert (run["status"], run["epochs_done"], run["epochs"]) == ("done", 1, 1)
    assert run["params"]["seed"] == 4
    assert done.locator(".pretrain-progress").inner_text() == "epoch 1 of 1"
    assert done.locator(".pretrain-loss").inner_text() == f"{run['last_loss']:.4f}"

    page.select_option("#pretrain-method", "patch_kmeans")
    assert page.locator("#pretrain-epochs").is_hidden()
    page.fill("#pretrain-centroids", "8")
    page.fill("#pretrain-patches", "500")
    page.locator("#start-pretraining").click()
    page.locator("#pretrain-status", has_text="queued").wait_for()
    done = page.locator('#pretraining-table tr[data-status="done"]')
    done.nth(1).wait_for(timeout=180_000)
    with demo.api() as c:
        kmeans, _ = call(c, "GET", f"/projects/{pid}/pretraining")
    assert {k: v for k, v in kmeans["params"].items() if k != "model"} == {
        "method": "patch_kmeans",
        "patch": 6,
        "centroids": 8,
        "patches": 500,
        "iterations": 10,
        "seed": 4,  # the field kept its value
    }
    assert done.first.locator(".pretrain-progress").inner_text() == "step 1 of 1"
    screenshot(page, "dashboard-pretraining")

    frozen = {
        "name": "pretrained",
        "input_shape": [1, 28, 28],
        "hparams": {"backbone": "pretraining"},
    }
    other = create_project_with_items(demo, "frozen backbone", 40, 10, model_spec=frozen)
    page.goto(f"{demo.base}/dashboard.html?project={other}")
    page.locator("#pretrain-architecture").wait_for()
    page.fill("#pretrain-epochs", "1")
    page.locator("#start-pretraining").click()  # no body chosen: the API says why one is needed
    page.locator("#pretrain-status.error", has_text="no body of its own").wait_for()
    with demo.api() as c:
        assert call(c, "GET", f"/projects/{other}/pretraining") == []
    page.select_option("#pretrain-architecture", "small_cnn")
    page.locator("#start-pretraining").click()
    page.locator("#pretrain-status:not(.error)", has_text="queued").wait_for()
    with demo.api() as c:
        (run,) = call(c, "GET", f"/projects/{other}/pretraining")
    assert run["params"]["model"] == {"name": "small_cnn", "input_shape": [1, 28, 28]}
    assert run["params"]["epochs"] == 1
    # Done before the next test shares the demo's worker.
    page.locator('#pretraining-table tr[data-status="done"]').wait_for(timeout=120_000)
