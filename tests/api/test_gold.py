"""Gold labels: known truth imported apart from the votes, all rows or none; what evaluation
scores against; honeypots mixed into queues; each annotator's measured accuracy."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.enums import CycleState, ProjectKind
from app.cycles.models import Cycle
from app.queue.models import QueueEntry
from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import Accounts, row_counts
from worker.pipeline import transitions
from worker.pipeline.snapshot import load_inputs


def _project(
    client: TestClient, accounts: Accounts, n_pool: int, n_test: int, **kw: object
) -> tuple[int, dict[str, int]]:
    pid = create_project(client, accounts, classes=["0", "1", "2"], **kw)["id"]
    ids = {}
    for s in range(n_pool + n_test):
        name = f"p{s}" if s < n_pool else f"t{s - n_pool}"
        split = "pool" if s < n_pool else "test"
        ids[name] = upload_png(client, accounts, pid, seed=s, external_id=name, split=split)["id"]
    return pid, ids


def _gold(client: TestClient, accounts: Accounts, pid: int, rows: object, **kw: object):
    return client.post(
        f"/api/v1/projects/{pid}/gold:import", headers=accounts.h("engineer"), **kw, json=rows
    )


def test_gold_imports_all_or_nothing_and_is_never_a_vote(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, ids = _project(app_client, accounts, 3, 2)
    before = row_counts(factory)
    for rows, status, code in (
        (
            [{"external_id": "p0", "class_index": 1}, {"external_id": "nope", "class_index": 0}],
            422,
            "unknown_item",
        ),
        ([{"external_id": "p0", "class_index": 3}], 422, "wrong_class"),
        ([{"external_id": "p0", "class_name": "9"}], 422, "wrong_class"),
        (
            [{"external_id": "p0", "class_index": 1}, {"external_id": "p0", "class_index": 2}],
            422,
            "conflicting_gold",
        ),
        ([], 422, "empty_import"),
    ):
        r = _gold(app_client, accounts, pid, rows)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
    assert row_counts(factory) == before

    csv = "external_id,class_name\np0,1\nt0,2\nt1,0\n"
    r = app_client.post(
        f"/api/v1/projects/{pid}/gold:import",
        content=csv,
        headers={**accounts.h("engineer"), "Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"created": 3, "unchanged": 0, "test_items": 2, "pool_items": 1}
    again = _gold(app_client, accounts, pid, [{"external_id": "p0", "class_index": 1}])
    assert again.json()["unchanged"] == 1
    clash = _gold(app_client, accounts, pid, [{"external_id": "p0", "class_index": 0}])
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "gold_conflict"
    listed = app_client.get(f"/api/v1/projects/{pid}/gold", headers=accounts.h("engineer"))
    assert [(g["item_id"], g["class_index"]) for g in listed.json()] == [
        (ids["p0"], 1),
        (ids["t0"], 2),
        (ids["t1"], 0),
    ]
    # Truth is not a vote: no annotation, no budget spent, nothing to export.
    after = row_counts(factory)
    assert after["annotation"] == before["annotation"]
    assert after["gold_label"] == before["gold_label"] + 3
    project = app_client.get(f"/api/v1/projects/{pid}", headers=accounts.h("engineer")).json()
    assert project["labels_spent"] == 0
    export = app_client.get(
        f"/api/v1/projects/{pid}/export",
        params={"format": "json"},
        headers=accounts.h("engineer"),
    )
    assert export.json() == []


def test_evaluation_scores_against_gold_and_counts_what_it_cannot_score(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, ids = _project(app_client, accounts, 3, 3)
    # t0: gold 2 (its votes say 1); t1: votes tie; t2: nothing at all.
    votes = [("t0", "a", 1), ("t1", "a", 0), ("t1", "b", 1), ("p1", "a", 0)]
    app_client.post(
        f"/api/v1/projects/{pid}/annotations:import",
        json=[{"external_id": e, "annotator": a, "class_index": k} for e, a, k in votes],
        headers=accounts.h("engineer"),
    )
    _gold(
        app_client,
        accounts,
        pid,
        [{"external_id": "t0", "class_index": 2}, {"external_id": "p0", "class_index": 1}],
    )
    cycle_id = open_batch(factory, pid, [])
    with factory() as db:
        inputs = load_inputs(db, db.get(Cycle, cycle_id))
    assert inputs.test.ids == [ids["t0"]]
    assert inputs.test_labels.tolist() == [2]  # gold, not the votes
    assert inputs.test_unlabelled == 2  # t1 (a tie) and t2 (no label): reported
    # A pool item with gold trains on it and is never a candidate; p2 has no label yet.
    assert inputs.labelled.ids == [ids["p0"], ids["p1"]]
    assert inputs.counts.tolist() == [[0, 1, 0], [1, 0, 0]]
    assert inputs.candidates.ids == [ids["p2"]]


def test_honeypots_are_mixed_into_the_queue_and_measure_each_annotator(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, ids = _project(app_client, accounts, 8, 0, honeypot_rate=0.25)
    add_member(app_client, accounts, pid, "annotator")
    _gold(
        app_client,
        accounts,
        pid,
        [{"external_id": "p6", "class_index": 2}, {"external_id": "p7", "class_index": 0}],
    )
    with factory() as db:
        cycle = Cycle(
            project_id=pid,
            number=1,
            kind=ProjectKind.acquire,
            state=CycleState.scoring,
            strategy="random",
            params={},
            seed=3,
            batch_size=4,
        )
        db.add(cycle)
        db.commit()
        inputs = load_inputs(db, cycle)
    assert ids["p6"] not in inputs.candidates.ids
    real = [ids[f"p{s}"] for s in range(4)]
    assert transitions.open_queue(factory, inputs, real, [4.0, 3.0, 2.0, 1.0])
    with factory() as db:
        entries = db.scalars(
            select(QueueEntry)
            .where(QueueEntry.cycle_id == inputs.cycle_id)
            .order_by(QueueEntry.rank)
        ).all()
        queue = [(e.item_id, e.score) for e in entries]
    # ceil(0.25 x 4) = 1 honeypot, in the middle of the batch, without a score.
    assert len(queue) == 5
    assert queue[2][0] in (ids["p6"], ids["p7"])
    assert queue[2][1] is None
    assert [i for i, _ in queue[:2] + queue[3:]] == real
    honeypot = queue[2][0]
    truth = 2 if honeypot == ids["p6"] else 0
    # The annotator labels everything, getting the honeypot wrong.
    for _ in range(5):
        item = lease_next(app_client, accounts, pid, "annotator")["item"]["id"]
        k = (truth + 1) % 3 if item == honeypot else 1
        r = app_client.post(
            f"/api/v1/items/{item}/annotations",
            json={"class_index": k},
            headers=accounts.h("annotator"),
        )
        assert r.status_code == 201, r.text
    progress = app_client.get(f"/api/v1/projects/{pid}/progress", headers=accounts.h("engineer"))
    (me,) = progress.json()["per_annotator"]
    assert me["labels"] == 5
    assert (me["gold_items"], me["gold_accuracy"]) == (1, 0.0)
    # One label per item: agreement with others is not measurable (was reported as 1.0).
    assert me["agreement"] is None
    assert me["agreement_items"] == 0
    assert me["estimated_accuracy"] is None
