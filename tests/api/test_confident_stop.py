"""Adaptive labels per item: an entry is done once its item's top class leads the runner-up
by the entry's ``stop_lead`` (both databases, both hot paths), and the worker derives that
lead from the project's ``confidence_target`` and Dawid–Skene's estimate of the annotators."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.annotations.confidence import decided_lead, one_coin_posterior
from app.core.enums import CycleState, ProjectKind
from app.cycles.models import Cycle
from app.queue.models import QueueEntry
from tests.api.helpers import (
    CLASSES,
    add_member,
    create_project,
    label_next,
    open_batch,
    upload_png,
)
from tests.conftest import BOTH_DB_MODES, Accounts
from worker.pipeline import transitions
from worker.pipeline.snapshot import load_inputs

PEOPLE = ("annotator", "outsider", "engineer")


def _entry(factory: sessionmaker[Session], cycle: int, item: int) -> tuple[str, int, int]:
    with factory() as db:
        e = db.scalar(
            select(QueueEntry).where(QueueEntry.cycle_id == cycle, QueueEntry.item_id == item)
        )
        assert e is not None
        return e.state.value, e.labels_received, e.labels_wanted


@BOTH_DB_MODES
@pytest.mark.rules("R-STOP-DECIDED")
def test_an_entry_stops_when_the_lead_reaches_stop_lead(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    # stop_when_decided off: only the confident-lead rule can end an entry early.
    pid = create_project(
        app_client, accounts, labels_per_item=5, stop_when_decided=False, confidence_target=0.9
    )["id"]
    for who in PEOPLE[:2]:
        add_member(app_client, accounts, pid, who)
    items = [upload_png(app_client, accounts, pid, seed=s)["id"] for s in range(2)]
    cycle = open_batch(factory, pid, items, labels_wanted=5, stop_lead=2)
    assert label_next(app_client, accounts, pid, "annotator", 3) == items[0]
    assert _entry(factory, cycle, items[0]) == ("open", 1, 5)
    assert label_next(app_client, accounts, pid, "outsider", 3) == items[0]
    assert _entry(factory, cycle, items[0]) == ("done", 2, 2)
    # Disagreeing labels: lead 0, still open.
    assert label_next(app_client, accounts, pid, "annotator", 1) == items[1]
    assert label_next(app_client, accounts, pid, "outsider", 2) == items[1]
    assert _entry(factory, cycle, items[1]) == ("open", 2, 5)


@BOTH_DB_MODES
def test_without_stop_lead_an_entry_wants_all_its_labels(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts, labels_per_item=3, stop_when_decided=False)["id"]
    for who in PEOPLE[:2]:
        add_member(app_client, accounts, pid, who)
    item = upload_png(app_client, accounts, pid, seed=0)["id"]
    cycle = open_batch(factory, pid, [item], labels_wanted=3)
    label_next(app_client, accounts, pid, "annotator", 1)
    label_next(app_client, accounts, pid, "outsider", 1)
    assert _entry(factory, cycle, item) == ("open", 2, 3)


@pytest.mark.parametrize("target", [0.5, 1.0, 0.9995, -1, "high"])
def test_confidence_target_out_of_range_is_refused(
    app_client: TestClient, accounts: Accounts, target: object
) -> None:
    r = app_client.post(
        "/api/v1/projects",
        json={
            "name": "x",
            "classes": ["a", "b"],
            "model_spec": {"name": "mlp", "input_shape": [4]},
            "confidence_target": target,
        },
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 422, r.text
    assert "confidence_target" in r.text
    listed = app_client.get("/api/v1/projects", headers=accounts.h("engineer")).json()
    assert all(p["name"] != "x" for p in listed)


def test_confidence_target_can_be_turned_off(app_client: TestClient, accounts: Accounts) -> None:
    pid = create_project(app_client, accounts, confidence_target=0.95)["id"]
    h = accounts.h("engineer")
    r = app_client.patch(f"/api/v1/projects/{pid}", json={"confidence_target": None}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["confidence_target"] is None


def test_the_worker_writes_the_lead_from_dawid_skene(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(
        app_client, accounts, labels_per_item=5, confidence_target=0.95, batch_size=2
    )["id"]
    h = accounts.h("engineer")
    for s in range(8):
        upload_png(app_client, accounts, pid, seed=s, external_id=f"i{s}")
    # Two crowd workers agree on 5 of 6 shared items: DS rates them well above chance.
    rows = [
        {"external_id": f"i{s}", "annotator": who, "class_index": k}
        for s in range(6)
        for who, k in (("ann", s % 3), ("bob", s % 3 if s else (s + 1) % 3))
    ]
    r = app_client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    with factory() as db:
        cycle = Cycle(project_id=pid, number=1, kind=ProjectKind.acquire,
                      state=CycleState.scoring, strategy="random", params={},
                      seed=0, batch_size=2)  # fmt: skip
        db.add(cycle)
        db.commit()
        inputs = load_inputs(db, cycle)
    ids = inputs.candidates.ids
    assert transitions.open_queue(factory, inputs, ids, [None] * len(ids), metrics={})
    with factory() as db:
        entries = db.scalars(select(QueueEntry).where(QueueEntry.project_id == pid)).all()
        metrics = db.get(Cycle, inputs.cycle_id).metrics  # type: ignore[union-attr]
    stop = metrics["confident_stop"]
    assert 0.5 < stop["vote_accuracy"] <= 1.0
    expected = decided_lead(0.95, stop["vote_accuracy"], len(CLASSES))
    assert stop["stop_lead"] == expected
    assert {e.stop_lead for e in entries} == {expected}


def test_no_lead_before_any_item_has_two_votes(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts, labels_per_item=3, confidence_target=0.9)["id"]
    upload_png(app_client, accounts, pid, seed=0, external_id="a")
    upload_png(app_client, accounts, pid, seed=1, external_id="b")
    app_client.post(
        f"/api/v1/projects/{pid}/annotations:import",
        json=[{"external_id": "a", "annotator": "ann", "class_index": 1}],
        headers=accounts.h("engineer"),
    )
    with factory() as db:
        cycle = Cycle(project_id=pid, number=1, kind=ProjectKind.acquire,
                      state=CycleState.scoring, strategy="random", params={},
                      seed=0, batch_size=1)  # fmt: skip
        db.add(cycle)
        db.commit()
        inputs = load_inputs(db, cycle)
    assert transitions.open_queue(factory, inputs, inputs.candidates.ids, [None], metrics={})
    with factory() as db:
        entry = db.scalar(select(QueueEntry).where(QueueEntry.project_id == pid))
        metrics = db.get(Cycle, inputs.cycle_id).metrics  # type: ignore[union-attr]
    assert entry is not None
    assert entry.stop_lead is None
    assert metrics["confident_stop"] == {"target": 0.9, "vote_accuracy": None, "stop_lead": None}


@pytest.mark.parametrize("accuracy", [0.3, 0.6, 0.8, 0.95])
@pytest.mark.parametrize("target", [0.8, 0.9, 0.99])
def test_decided_lead_is_the_smallest_confident_lead(accuracy: float, target: float) -> None:
    """Brute force over vote counts: at the lead, every count vector with that lead over the
    runner-up has a top posterior >= target; one vote less, some vector falls short."""
    c = 4
    lead = decided_lead(target, accuracy, c)
    if accuracy <= 1 / c:
        assert lead is None
        return
    assert lead is not None

    def worst(votes: int) -> float:
        counts = np.array([[votes, 0, 0, 0]])  # every other class as close as the runner-up
        return float(one_coin_posterior(counts, accuracy)[0, 0])

    assert worst(lead) >= target - 1e-12
    if lead > 1:
        assert worst(lead - 1) < target
    assert not math.isnan(worst(lead))
