"""Cleaning projects: an item stays queued, one more label at a time, until its votes have
a strict majority; relabels count against the relabel budget; every b labels re-rank."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.enums import ProjectKind
from app.cycles.models import Cycle
from app.queue.models import QueueEntry
from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts, row_counts

pytestmark = BOTH_DB_MODES


def _clean_project(
    client: TestClient, accounts: Accounts, factory: sessionmaker[Session], **overrides: object
) -> tuple[int, list[int]]:
    pid = create_project(client, accounts, kind="clean", **overrides)["id"]
    assert (
        client.get(f"/api/v1/projects/{pid}", headers=accounts.h("engineer")).json()["strategy"]
        == "ce_minus_entropy"
    )
    for who in ("annotator", "outsider"):
        add_member(client, accounts, pid, who)
    items = [upload_png(client, accounts, pid, seed=s, external_id=f"c{s}")["id"] for s in range(2)]
    rows = [{"external_id": f"c{s}", "annotator": "crowd", "class_index": 5} for s in range(2)]
    r = client.post(
        f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=accounts.h("engineer")
    )
    assert r.status_code == 200
    cycle = open_batch(factory, pid, items, labels_wanted=1)
    with factory() as db:
        db.get(Cycle, cycle).kind = ProjectKind.clean  # type: ignore[union-attr]
        db.commit()
    return pid, items


def _label(client: TestClient, accounts: Accounts, pid: int, who: str, item: int, k: int) -> int:
    assert lease_next(client, accounts, pid, who)["item"]["id"] == item
    r = client.post(
        f"/api/v1/items/{item}/annotations", json={"class_index": k}, headers=accounts.h(who)
    )
    return r.status_code


def _entry(factory: sessionmaker[Session], item: int) -> QueueEntry:
    with factory() as db:
        entry = db.scalars(select(QueueEntry).where(QueueEntry.item_id == item)).one()
        db.expunge(entry)
        return entry


@pytest.mark.rules("R-MAJORITY")
def test_an_item_is_relabelled_until_its_votes_settle(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items = _clean_project(app_client, accounts, factory, relabel_budget=10)
    # Noisy label 5, then a 3: a 1–1 tie, so the item wants one more label.
    assert _label(app_client, accounts, pid, "annotator", items[0], 3) == 201
    entry = _entry(factory, items[0])
    assert (entry.state.value, entry.labels_received, entry.labels_wanted) == ("open", 1, 2)
    # A third vote for 3 settles it (2–1), and the entry is done.
    assert _label(app_client, accounts, pid, "outsider", items[0], 3) == 201
    entry = _entry(factory, items[0])
    assert (entry.state.value, entry.labels_received) == ("done", 2)
    # Agreeing with the noisy label settles at once (2–0).
    assert _label(app_client, accounts, pid, "annotator", items[1], 5) == 201
    assert _entry(factory, items[1]).state.value == "done"
    progress = app_client.get(f"/api/v1/projects/{pid}/progress", headers=accounts.h("engineer"))
    assert progress.json()["cleaning"] == {
        "relabel_budget": 10,
        "items_cleaned": 2,
        "items_relabelled": 2,
        "majority_changed": 1,
    }
    assert progress.json()["labels_spent"] == 3
    export = app_client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "json"}, headers=accounts.h("engineer")
    ).json()
    assert {(r["external_id"], r["label"], r["relabelled"]) for r in export} == {
        ("c0", "3", True),
        ("c1", "5", True),
    }


@pytest.mark.rules("R-BUDGET")
def test_relabels_stop_at_the_relabel_budget(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items = _clean_project(app_client, accounts, factory, relabel_budget=1)
    assert _label(app_client, accounts, pid, "annotator", items[0], 3) == 201
    before = row_counts(factory)
    assert lease_next(app_client, accounts, pid, "outsider")["status"] == "budget_spent"
    assert row_counts(factory) == before


@pytest.mark.rules("R-REFRESH")
def test_every_b_labels_ask_the_worker_to_rerank(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items = _clean_project(app_client, accounts, factory, relabel_budget=10, finetune_every=1)
    sent = app_client.app.state.task_sender.sent  # type: ignore[attr-defined]
    assert _label(app_client, accounts, pid, "annotator", items[0], 3) == 201  # tie: still open
    assert sent[-1] == ("annoloop.cycles.refresh", [pid], "default")
