"""``/progress`` of a large project serves the last per-person statistics at once and
recomputes them in the background (issue 15, item 7): a request never waits for them."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from app.reports import people_stats
from tests.api.helpers import add_member, create_project, open_batch, upload_png
from tests.conftest import Accounts


@pytest.mark.parametrize("db_mode", ["committed"], indirect=True)  # its own sessions
def test_large_projects_get_last_statistics_then_fresh_ones(
    app_client: TestClient, accounts: Accounts, factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every project counts as large here: statistics are served, then refreshed behind.
    monkeypatch.setattr(people_stats, "INLINE_S", -1.0)
    store = app_client.app.state.people_stats  # type: ignore[attr-defined]
    monkeypatch.setattr(store, "_max_age_s", 0.2)
    pid = create_project(app_client, accounts)["id"]
    add_member(app_client, accounts, pid, "annotator")
    item = upload_png(app_client, accounts, pid, seed=0)["id"]
    open_batch(factory, pid, [item])
    h = accounts.h("engineer")
    first = app_client.get(f"/api/v1/projects/{pid}/progress", headers=h).json()
    assert first["per_annotator"] == []

    app_client.get(f"/api/v1/projects/{pid}/next", headers=accounts.h("annotator"))
    r = app_client.post(
        f"/api/v1/items/{item}/annotations",
        json={"class_index": 2},
        headers=accounts.h("annotator"),
    )
    assert r.status_code == 201, r.text
    time.sleep(0.3)
    stale = app_client.get(f"/api/v1/projects/{pid}/progress", headers=h).json()
    # The cheap counters are live; the per-person table is the last one, and says when.
    assert stale["labels_spent"] == 1
    assert stale["per_annotator"] == []
    assert stale["stats_as_of"] == first["stats_as_of"]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fresh = app_client.get(f"/api/v1/projects/{pid}/progress", headers=h).json()
        if fresh["per_annotator"]:
            break
        time.sleep(0.1)
    assert [a["labels"] for a in fresh["per_annotator"]] == [1]
    assert fresh["stats_as_of"] > first["stats_as_of"]
