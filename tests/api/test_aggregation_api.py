"""How votes become labels, through the API: the project's aggregation model, re-derived when
it changes, never rewriting a vote; cross-fitting folds checked when a cycle starts."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.annotations.models import Annotation
from app.core.enums import CycleState, ProjectKind
from app.cycles.models import Cycle
from tests.api.helpers import create_project, open_batch, upload_png
from tests.conftest import Accounts, row_counts
from worker.pipeline.crossfit import scores_bytes
from worker.pipeline.snapshot import load_inputs


def _imported(client: TestClient, accounts: Accounts, **overrides: object) -> tuple[int, dict]:
    """Three annotators: i0, i4, i5 2–1 (a and b agree, c does not); i1 a 1–1 tie (a: 0,
    c: 2); i2 one vote for 2; i3 no vote."""
    pid = create_project(client, accounts, classes=["0", "1", "2"], **overrides)["id"]
    ids = {
        f"i{s}": upload_png(client, accounts, pid, seed=s, external_id=f"i{s}")["id"]
        for s in range(6)
    }
    rows = [
        ("i0", "a", 1),
        ("i0", "b", 1),
        ("i0", "c", 0),
        ("i1", "a", 0),
        ("i1", "c", 2),
        ("i2", "b", 2),
        ("i4", "a", 2),
        ("i4", "b", 2),
        ("i4", "c", 1),
        ("i5", "a", 0),
        ("i5", "b", 0),
        ("i5", "c", 2),
    ]
    r = client.post(
        f"/api/v1/projects/{pid}/annotations:import",
        json=[{"external_id": e, "annotator": a, "class_index": k} for e, a, k in rows],
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 200, r.text
    return pid, ids


def _export(client: TestClient, accounts: Accounts, pid: int, **params: str) -> dict:
    r = client.get(
        f"/api/v1/projects/{pid}/export",
        params={"format": "json", **params},
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 200, r.text
    return {row["external_id"]: row for row in r.json()}


def test_majority_leaves_ties_open_and_tiebreak_closes_them_seeded(
    app_client: TestClient, accounts: Accounts
) -> None:
    pid, _ = _imported(app_client, accounts)
    rows = _export(app_client, accounts, pid)
    assert rows["i0"]["class_index"] == 1
    assert rows["i0"]["method"] == "majority"
    assert rows["i1"]["class_index"] is None
    assert rows["i1"]["tied"] is True
    assert rows["i0"]["posterior"] == [round(1 / 3, 6), round(2 / 3, 6), 0.0]
    assert "i3" not in rows  # no vote, no row

    patched = app_client.patch(
        f"/api/v1/projects/{pid}",
        json={"aggregation": "majority_tiebreak"},
        headers=accounts.h("engineer"),
    )
    assert patched.status_code == 200
    assert patched.json()["aggregation"] == "majority_tiebreak"
    first = _export(app_client, accounts, pid)
    assert first["i1"]["class_index"] in (0, 2)
    assert first["i1"]["tied"] is True
    assert first["i1"]["method"] == "majority_tiebreak"
    assert _export(app_client, accounts, pid)["i1"]["class_index"] == first["i1"]["class_index"]


def test_changing_the_method_rederives_and_never_touches_a_vote(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, ids = _imported(app_client, accounts)
    with factory() as db:
        before = db.execute(
            select(Annotation.id, Annotation.item_id, Annotation.class_index).order_by(
                Annotation.id
            )
        ).all()
    app_client.patch(
        f"/api/v1/projects/{pid}",
        json={"aggregation": "dawid_skene"},
        headers=accounts.h("engineer"),
    )
    rows = _export(app_client, accounts, pid)
    assert {r["method"] for r in rows.values()} == {"dawid_skene"}
    # Dawid–Skene trusts a and b (they agree on i0) over c: the tie on i1 goes to a's class.
    assert rows["i1"]["class_index"] == 0
    assert abs(sum(rows["i1"]["posterior"]) - 1) < 1e-5
    # crowdlab without held-out model predictions falls back, and says so.
    crowd = _export(app_client, accounts, pid, aggregation="crowdlab")
    assert {r["method"] for r in crowd.values()} == {"dawid_skene"}
    with factory() as db:
        after = db.execute(
            select(Annotation.id, Annotation.item_id, Annotation.class_index).order_by(
                Annotation.id
            )
        ).all()
    assert after == before
    # The engineer's item list carries the derived label; an unknown method is a 422.
    listed = app_client.get(f"/api/v1/projects/{pid}/items", headers=accounts.h("engineer")).json()[
        "items"
    ]
    derived = {i["external_id"]: i["derived"] for i in listed}
    assert derived["i3"] is None
    assert derived["i0"]["class_index"] == 1
    assert derived["i1"]["method"] == "dawid_skene"
    r = app_client.get(f"/api/v1/items/{ids['i1']}", headers=accounts.h("engineer")).json()
    assert r["derived"]["class_index"] == 0
    bad = app_client.get(
        f"/api/v1/projects/{pid}/export",
        params={"aggregation": "plurality"},
        headers=accounts.h("engineer"),
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "unknown_aggregation"


def test_bad_settings_are_refused_and_store_nothing(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    h = accounts.h("engineer")
    base = {
        "name": "p",
        "classes": ["a", "b"],
        "model_spec": {"name": "mlp", "input_shape": [4]},
    }
    counts = row_counts(factory)
    for bad in ({"aggregation": "plurality"}, {"crossfit_folds": 1}, {"crossfit_folds": 51}):
        r = app_client.post("/api/v1/projects", json={**base, **bad}, headers=h)
        assert r.status_code == 422, (bad, r.text)
    assert row_counts(factory) == counts
    pid, _ = _imported(app_client, accounts, kind="clean", relabel_budget=5)
    assert app_client.get(f"/api/v1/projects/{pid}", headers=h).json()["crossfit_folds"] == 5
    counts = row_counts(factory)
    # 5 labelled items make 5 folds, 6 would not: refused before any cycle exists.
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={"params": {"folds": 6}}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "too_many_folds", r.text
    r = app_client.post(
        f"/api/v1/projects/{pid}/cycles", json={"params": {"folds": "five"}}, headers=h
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "bad_folds", r.text
    assert row_counts(factory) == counts
    with factory() as db:
        assert db.scalar(select(func.count(Annotation.id))) == 12


def test_training_targets_follow_the_aggregation_model(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, ids = _imported(app_client, accounts)
    app_client.post(
        f"/api/v1/projects/{pid}/gold:import",
        json=[{"external_id": "i2", "class_index": 0}],
        headers=accounts.h("engineer"),
    )
    cycle_id = open_batch(factory, pid, [])
    with factory() as db:
        votes = load_inputs(db, db.get(Cycle, cycle_id))
    assert votes.aggregation == "votes"
    assert votes.targets is None
    i1 = votes.labelled.ids.index(ids["i1"])
    assert votes.training_targets()[i1].tolist() == [0.5, 0.0, 0.5]
    app_client.patch(
        f"/api/v1/projects/{pid}",
        json={"aggregation": "dawid_skene"},
        headers=accounts.h("engineer"),
    )
    with factory() as db:
        ds = load_inputs(db, db.get(Cycle, cycle_id))
    assert ds.aggregation == "dawid_skene"
    assert ds.targets is not None
    np.testing.assert_allclose(ds.targets.sum(axis=1), 1.0)
    assert ds.targets[i1].argmax() == 0  # the tie goes to the trusted annotator's class
    i2 = ds.labelled.ids.index(ids["i2"])
    assert ds.targets[i2].tolist() == [1.0, 0.0, 0.0]  # gold trains as itself
    assert ds.counts.tolist() == votes.counts.tolist()  # the votes themselves are unchanged


def test_crowdlab_reads_the_last_cleaning_cycles_held_out_probabilities(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid, ids = _imported(app_client, accounts, kind="clean", aggregation="crowdlab")
    blobs = app_client.app.state.blobs  # type: ignore[attr-defined]
    voted = sorted(ids[e] for e in ("i0", "i1", "i2", "i4", "i5"))
    # Held-out probabilities as a cleaning merge stores them: the model favours class 2.
    probs = np.tile([0.1, 0.1, 0.8], (len(voted), 1))
    sha = blobs.put(scores_bytes(voted, np.zeros(len(voted)), probs))
    with factory() as db:
        cycle = Cycle(project_id=pid, number=1, kind=ProjectKind.clean,
                      state=CycleState.completed, strategy="ce_minus_entropy", params={},
                      seed=0, batch_size=2, scores_sha256=sha)  # fmt: skip
        db.add(cycle)
        db.commit()
        with_model = load_inputs(db, cycle, blobs)
        without = load_inputs(db, cycle)
    assert with_model.aggregation == "crowdlab"
    assert without.aggregation == "dawid_skene"  # no blob store: said, not hidden
    assert with_model.targets is not None
    np.testing.assert_allclose(with_model.targets.sum(axis=1), 1.0)
    rows = _export(app_client, accounts, pid)
    assert {r["method"] for r in rows.values()} == {"crowdlab"}
    # The 1-1 tie on i1 (0 vs 2) goes to the class the model favours.
    assert rows["i1"]["class_index"] == 2


def test_dawid_skene_waits_for_an_item_with_two_votes(
    app_client: TestClient, accounts: Accounts
) -> None:
    """With one vote per item EM drifts from the votes; until two votes meet on an item the
    labels are the votes, and the export says which method decided."""
    h = accounts.h("engineer")
    pid = create_project(app_client, accounts, aggregation="dawid_skene")["id"]
    for s in range(4):
        upload_png(app_client, accounts, pid, seed=s, external_id=f"s{s}")
    single = [
        {"external_id": f"s{s}", "annotator": who, "class_index": k}
        for s, who, k in ((0, "a", 1), (1, "b", 2), (2, "a", 3), (3, "c", 1))
    ]
    r = app_client.post(f"/api/v1/projects/{pid}/annotations:import", json=single, headers=h)
    assert r.status_code == 200, r.text
    rows = _export(app_client, accounts, pid)
    assert {r["method"] for r in rows.values()} == {"majority"}
    assert [rows[f"s{s}"]["class_index"] for s in range(4)] == [1, 2, 3, 1]
    second = [{"external_id": "s0", "annotator": "b", "class_index": 1}]
    r = app_client.post(f"/api/v1/projects/{pid}/annotations:import", json=second, headers=h)
    assert r.status_code == 200, r.text
    assert {r["method"] for r in _export(app_client, accounts, pid).values()} == {"dawid_skene"}
