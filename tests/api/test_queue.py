from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.annotations.models import Annotation
from app.core.db import utcnow
from app.core.enums import CycleState
from app.core.tasks import bind_sender
from app.cycles.models import Cycle
from app.cycles.service import complete_if_labelled
from app.projects.models import Project
from app.queue.models import Lease, QueueEntry
from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts, row_counts

pytestmark = BOTH_DB_MODES


def _project(
    client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    n: int = 3,
    labels_wanted: int = 1,
    **project: object,
) -> tuple[int, list[int], int]:
    pid = create_project(client, accounts, **project)["id"]
    for who in ("annotator", "outsider", "admin"):
        if who != "admin":
            add_member(client, accounts, pid, who)
    items = [upload_png(client, accounts, pid, seed=s)["id"] for s in range(n)]
    cycle = open_batch(factory, pid, items, labels_wanted=labels_wanted)
    return pid, items, cycle


def _label(client: TestClient, accounts: Accounts, item: int, who: str, k: int = 0) -> int:
    r = client.post(
        f"/api/v1/items/{item}/annotations", json={"class_index": k}, headers=accounts.h(who)
    )
    return r.status_code


@pytest.mark.rules("R-PICK-ORDER", "R-LEASE-HELD", "R-QUEUE-EMPTY")
def test_leases_follow_rank_and_are_sticky(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items, cycle = _project(app_client, accounts, factory)
    first = lease_next(app_client, accounts, pid, "annotator")
    assert (first["status"], first["item"]["id"], first["cycle_id"]) == ("leased", items[0], cycle)
    again = lease_next(app_client, accounts, pid, "annotator")
    assert again["lease"]["id"] == first["lease"]["id"]  # a reload does not take a second item
    other = lease_next(app_client, accounts, pid, "outsider")
    assert other["item"]["id"] == items[1]  # one label wanted: no sharing
    assert _label(app_client, accounts, items[0], "annotator") == 201
    nxt = lease_next(app_client, accounts, pid, "annotator")
    assert nxt["item"]["id"] == items[2]
    assert _label(app_client, accounts, items[2], "annotator") == 201
    assert lease_next(app_client, accounts, pid, "annotator")["status"] == "queue_empty"


@pytest.mark.rules("R-LEASE-HELD", "R-LEASE")
def test_ahead_leases_the_following_item_too(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items, cycle = _project(app_client, accounts, factory, n=3)

    def ahead(who: str) -> dict[str, Any]:
        r = app_client.get(
            f"/api/v1/projects/{pid}/next", params={"ahead": 1}, headers=accounts.h(who)
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    first = ahead("annotator")
    assert first["item"]["id"] == items[0]
    assert first["ahead"]["item"]["id"] == items[1]
    assert first["ahead"]["cycle_id"] == cycle
    assert ahead("annotator") == first  # a reload takes nothing more
    plain = lease_next(app_client, accounts, pid, "annotator")
    assert (plain["lease"], plain["ahead"]) == (first["lease"], None)
    # The prefetched slot is really held: the next person gets the third item.
    assert lease_next(app_client, accounts, pid, "outsider")["item"]["id"] == items[2]
    assert _label(app_client, accounts, items[0], "annotator") == 201
    second = ahead("annotator")
    assert second["lease"] == first["ahead"]["lease"]
    assert second["ahead"] is None  # nothing left to prefetch
    with factory() as db:
        open_leases = db.scalars(select(Lease).where(Lease.released_at.is_(None))).all()
        assert sorted(lease.item_id for lease in open_leases) == [items[1], items[2]]
        assert sum(e.leases_open for e in db.scalars(select(QueueEntry))) == 2
    r = app_client.get(f"/api/v1/projects/{pid}/next?ahead=2", headers=accounts.h("annotator"))
    assert r.status_code == 422


@pytest.mark.rules("R-PICK-ORDER", "R-COUNT-LABEL")
def test_several_labels_per_item_go_to_different_annotators(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items, _ = _project(app_client, accounts, factory, n=1, labels_wanted=2)
    a = lease_next(app_client, accounts, pid, "annotator")
    b = lease_next(app_client, accounts, pid, "outsider")
    assert a["item"]["id"] == b["item"]["id"] == items[0]
    assert lease_next(app_client, accounts, pid, "admin")["status"] == "queue_empty"  # 2 slots
    assert _label(app_client, accounts, items[0], "annotator", 1) == 201
    assert _label(app_client, accounts, items[0], "outsider", 2) == 201
    with factory() as db:
        entry = db.scalars(select(QueueEntry)).one()
        assert (entry.state.value, entry.labels_received, entry.leases_open) == ("done", 2, 0)


@pytest.mark.rules("R-PICK-ORDER")
def test_skip_frees_the_slot_for_others_only(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items, _ = _project(app_client, accounts, factory, n=1)
    lease = lease_next(app_client, accounts, pid, "annotator")["lease"]
    assert lease_next(app_client, accounts, pid, "outsider")["status"] == "queue_empty"
    r = app_client.post(f"/api/v1/leases/{lease['id']}/skip", headers=accounts.h("annotator"))
    assert r.status_code == 204
    assert lease_next(app_client, accounts, pid, "annotator")["status"] == "queue_empty"
    assert lease_next(app_client, accounts, pid, "outsider")["item"]["id"] == items[0]
    r = app_client.post(f"/api/v1/leases/{lease['id']}/skip", headers=accounts.h("annotator"))
    assert r.status_code == 409


@pytest.mark.rules("R-NOT-LEASED", "R-LEASE-SWEEP")
def test_labels_need_a_live_lease(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items, _ = _project(app_client, accounts, factory, n=2)
    assert _label(app_client, accounts, items[1], "annotator") == 409  # never leased
    lease = lease_next(app_client, accounts, pid, "annotator")["lease"]
    with factory() as db:
        db.execute(
            update(Lease)
            .where(Lease.id == lease["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.commit()
    before = row_counts(factory)
    r = app_client.post(
        f"/api/v1/items/{items[0]}/annotations",
        json={"class_index": 0},
        headers=accounts.h("annotator"),
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "lease_expired"
    assert row_counts(factory) == before
    # The expired lease is swept on the next request and the item is offered again.
    again = lease_next(app_client, accounts, pid, "outsider")
    assert again["item"]["id"] == items[0]
    with factory() as db:
        assert db.get(Lease, lease["id"]).outcome.value == "expired"  # type: ignore[union-attr]


@pytest.mark.rules("R-BUDGET", "R-SPEND")
def test_budget_stops_leases_and_refuses_labels_beyond_it(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items, _ = _project(app_client, accounts, factory, n=3, label_budget=2)
    lease_next(app_client, accounts, pid, "annotator")
    lease_next(app_client, accounts, pid, "outsider")
    assert lease_next(app_client, accounts, pid, "admin")["status"] == "budget_spent"
    r = app_client.patch(
        f"/api/v1/projects/{pid}", json={"label_budget": 1}, headers=accounts.h("engineer")
    )
    assert r.status_code == 200
    assert _label(app_client, accounts, items[0], "annotator") == 201
    before = row_counts(factory)
    r = app_client.post(
        f"/api/v1/items/{items[1]}/annotations",
        json={"class_index": 0},
        headers=accounts.h("outsider"),
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "budget_spent"
    assert row_counts(factory) == before
    with factory() as db:
        assert db.get(Project, pid).labels_spent == 1  # type: ignore[union-attr]


def test_undo_retracts_and_leases_the_item_back(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items, _ = _project(app_client, accounts, factory, n=2)
    lease_next(app_client, accounts, pid, "annotator")
    assert _label(app_client, accounts, items[0], "annotator", 3) == 201
    r = app_client.post(f"/api/v1/projects/{pid}/annotations:undo", headers=accounts.h("annotator"))
    assert r.status_code == 200, r.text
    assert r.json()["item"]["id"] == items[0]
    assert _label(app_client, accounts, items[0], "annotator", 4) == 201
    with factory() as db:
        votes = db.scalars(select(Annotation).order_by(Annotation.id)).all()
        assert [(v.class_index, v.retracted_at is None) for v in votes] == [(3, False), (4, True)]
        assert db.get(Project, pid).labels_spent == 1  # type: ignore[union-attr]
    r = app_client.post(f"/api/v1/projects/{pid}/annotations:undo", headers=accounts.h("outsider"))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "nothing_to_undo"


@pytest.mark.rules("R-ADVANCE")
def test_the_last_label_of_a_batch_completes_the_cycle_and_auto_advances(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, items, cycle = _project(app_client, accounts, factory, n=2, auto_advance=True)
    sent = app_client.app.state.task_sender.sent  # type: ignore[attr-defined]
    for item in items:
        lease_next(app_client, accounts, pid, "annotator")
        assert _label(app_client, accounts, item, "annotator") == 201
    assert list(sent) == [("annoloop.cycles.advance", [pid], "default")]  # once, after the last
    with factory() as db:
        bind_sender(db, app_client.app.state.task_sender)  # type: ignore[attr-defined]
        started = complete_if_labelled(db, pid)
        assert started is not None
        assert started.number == 2
        assert db.get(Cycle, cycle).state is CycleState.completed  # type: ignore[union-attr]
        assert complete_if_labelled(db, pid) is None  # idempotent
        db.commit()
    assert sent[-1] == ("annoloop.cycles.run", [started.id], "train")
