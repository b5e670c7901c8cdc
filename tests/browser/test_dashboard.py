"""The dashboard in a real browser: an engineer starts the next cycle from it and sees the
accuracy curve and the score histogram; an annotator sees no engineer actions and the API
refuses them when called from the page anyway."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from app.cycles.strategies import ACQUISITION_STRATEGIES
from tests.browser.helpers import (
    Demo,
    add_member,
    call,
    cycles,
    label_queue_via_api,
    screenshot,
    wait_for_cycle,
)
from tests.browser.pages import sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow

NewPage = Callable[..., "Page"]


def test_engineer_starts_next_cycle_and_sees_accuracy_and_scores(
    demo: Demo, new_page: NewPage
) -> None:
    pid = demo.project_id
    # Finish the demo's first batch: a second person labels what the first one has not.
    with demo.api() as c:
        second = call(c, "POST", "/annotators", json={"name": "second-annotator"})
    add_member(demo, pid, second["token"])
    # The page's leases held from before: the item shown and the one prefetched after it.
    label_queue_via_api(demo, pid, demo.annotator, limit=2)
    label_queue_via_api(demo, pid, second["token"])
    wait_for_cycle(demo, pid, 1, "completed", timeout=180)  # the advance task, on a loaded CI

    page = new_page(1280, 900)
    sign_in(page, demo.base, demo.admin)
    page.goto(f"{demo.base}/dashboard.html?project={pid}")
    page.locator('#card-cycle [data-state="completed"]').wait_for()
    assert page.locator("#card-accuracy circle.point").count() == 1
    assert page.locator("#strategy").input_value() == "entropy"  # the project's strategy
    # The choices are the API's list (GET /strategies), not one kept in the page.
    offered = page.locator("#strategy option").evaluate_all("os => os.map(o => o.value)")
    assert sorted(offered) == sorted(ACQUISITION_STRATEGIES)

    page.locator("#start-cycle").click()
    page.locator("#action-status", has_text="Cycle 2 started").wait_for()
    page.locator('#cycles-table tr[data-state="labeling"]').wait_for(timeout=120_000)
    page.locator("#card-scores h2", has_text="cycle 2").wait_for()

    points = page.locator("#card-accuracy circle.point")
    assert points.count() == 2
    xs = [float(points.nth(i).get_attribute("data-x") or "nan") for i in range(2)]
    ys = [float(points.nth(i).get_attribute("data-y") or "nan") for i in range(2)]
    by_number = {c["number"]: c["metrics"] for c in cycles(demo, pid)}
    assert xs == [by_number[1]["labels"], by_number[2]["labels"]]
    assert ys == [by_number[1]["test"]["accuracy"], by_number[2]["test"]["accuracy"]]
    line = page.locator("#card-accuracy path.line")
    assert line.count() == 1
    assert "L" in (line.get_attribute("d") or "")

    bars = page.locator("#card-scores rect.hist-bar")
    assert bars.count() == 30
    with demo.api() as c:
        cycle2 = next(c for c in cycles(demo, pid) if c["number"] == 2)
        hist = call(c, "GET", f"/projects/{pid}/cycles/{cycle2['id']}/scores", params={"bins": 30})
    drawn = [int(bars.nth(i).get_attribute("data-count") or -1) for i in range(30)]
    assert drawn == hist["counts"]
    marked = page.locator("#card-scores rect.hist-marked")
    assert marked.count() >= 1
    assert sum(
        int(marked.nth(i).get_attribute("data-count") or 0) for i in range(marked.count())
    ) == len(hist["selected_scores"])

    names = page.locator("#annotators-table tbody td:first-child").all_inner_texts()
    assert "second-annotator" in names
    headers = page.locator("#annotators-table thead th").all_inner_texts()
    assert headers[2:] == ["Agrees with others", "Gold accuracy", "Estimated"]
    with demo.api() as c:
        people = call(c, "GET", f"/projects/{pid}/progress")["per_annotator"]
    # One label per item and no gold in the demo: neither is measurable, and the page says so.
    assert all(p["agreement"] is None and p["gold_accuracy"] is None for p in people)
    second = page.locator('#annotators-table tr:has-text("second-annotator") td')
    assert second.nth(2).inner_text() == "not measurable"
    assert second.nth(3).inner_text() == "not measurable"
    assert page.locator("#aggregation").inner_text() == "majority"
    screenshot(page, "dashboard", doc=True)

    with page.expect_download() as download:
        page.locator("#export").click()
    body = download.value.path().read_text()
    assert body.splitlines()[0].startswith("external_id") or "mnist-" in body


def test_annotator_sees_no_engineer_actions_and_the_api_refuses_them(
    demo: Demo, new_page: NewPage
) -> None:
    pid = demo.project_id
    page = new_page()
    sign_in(page, demo.base, demo.annotator)
    page.goto(f"{demo.base}/dashboard.html?project={pid}")
    page.locator("#cycles-table").wait_for()
    for hidden in ("#card-actions", "#start-cycle", "#cancel-cycle", "#auto-advance", "#export"):
        assert page.locator(hidden).count() == 0, hidden
    assert page.locator("#card-scores").count() == 0  # the scores route is engineers' only
    assert page.locator("#read-only").is_visible()
    screenshot(page, "dashboard-annotator")

    before = len(cycles(demo, pid))
    answers = page.evaluate(
        """async (pid) => {
          const headers = {
            Authorization: `Bearer ${sessionStorage.getItem("annoloop.token")}`,
            "Content-Type": "application/json",
          };
          const calls = [
            ["POST", `/api/v1/projects/${pid}/cycles`, "{}"],
            ["PATCH", `/api/v1/projects/${pid}`, '{"auto_advance": true}'],
            ["POST", `/api/v1/projects/${pid}/cycles/1/cancel`, null],
            ["GET", `/api/v1/projects/${pid}/export?format=csv`, null],
          ];
          const out = [];
          for (const [method, url, body] of calls) {
            const r = await fetch(url, { method, headers, body });
            out.push([r.status, (await r.json()).error.code]);
          }
          return out;
        }""",
        pid,
    )
    assert answers == [[403, "forbidden"]] * 4
    assert len(cycles(demo, pid)) == before
    with demo.api() as c:
        assert call(c, "GET", f"/projects/{pid}")["auto_advance"] is False
