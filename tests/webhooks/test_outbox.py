"""The outbox: the database writes a delivery row in the same transaction as the change it
reports, for every subscription that asked for the event, on both databases."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.enums import CycleState, ProjectKind, QueueState
from app.cycles.models import Cycle
from app.items.models import Item
from app.projects.models import Project
from app.queue.models import QueueEntry
from app.webhooks.models import Webhook, WebhookDelivery
from tests.api.helpers import open_batch

ALL = ",cycle.state_changed,batch.labelled,budget.spent,"


def _project(db: Session, name: str, **kw: Any) -> Project:
    project = Project(
        name=name,
        kind=ProjectKind.acquire,
        classes=["a", "b"],
        model_spec={"name": "mlp", "input_shape": [2]},
        strategy="random",
        strategy_params={},
        batch_size=2,
        **kw,
    )
    db.add(project)
    db.flush()
    return project


def _hook(db: Session, project: Project, events: str = ALL, active: bool = True) -> Webhook:
    hook = Webhook(
        project_id=project.id,
        url="http://x.invalid/",
        secret="s" * 20,
        events=events,
        active=active,
    )
    db.add(hook)
    db.flush()
    return hook


def _deliveries(db: Session, hook: Webhook) -> list[tuple[str, dict[str, Any]]]:
    rows = db.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == hook.id)
        .order_by(WebhookDelivery.id)
    )
    return [(r.event, json.loads(r.payload)) for r in rows]


def test_triggers_exist_at_head(migrated_engine: Engine) -> None:
    with migrated_engine.connect() as conn:
        if migrated_engine.dialect.name == "postgresql":
            names = conn.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).all()
            assert {"webhook_cycle", "webhook_budget_spent"} <= set(names)
        else:
            names = conn.scalars(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            ).all()
            assert {
                "webhook_cycle_inserted",
                "webhook_cycle_state_changed",
                "webhook_budget_spent",
            } <= set(names)


def test_cycle_changes_write_deliveries_in_their_transaction(
    factory: sessionmaker[Session],
) -> None:
    with factory() as db:
        project = _project(db, "hooked")
        everything = _hook(db, project)
        budget_only = _hook(db, project, events=",budget.spent,")
        removed = _hook(db, project, active=False)
        quiet = _project(db, "no-hooks")
        cycle = Cycle(
            project_id=project.id,
            number=1,
            kind=ProjectKind.acquire,
            strategy="random",
            params={},
            seed=0,
            batch_size=2,
        )
        db.add(cycle)
        db.flush()
        for state in (CycleState.training, CycleState.scoring, CycleState.labeling):
            db.execute(update(Cycle).where(Cycle.id == cycle.id).values(state=state))
        db.execute(
            update(Cycle).where(Cycle.id == cycle.id).values(state=CycleState.labeling)
        )  # no change
        db.execute(update(Cycle).where(Cycle.id == cycle.id).values(state=CycleState.completed))
        other = Cycle(
            project_id=quiet.id,
            number=1,
            kind=ProjectKind.acquire,
            strategy="random",
            params={},
            seed=0,
            batch_size=2,
        )
        db.add(other)
        db.flush()
        got = _deliveries(db, everything)
        assert [(e, p.get("from"), p.get("to")) for e, p in got] == [
            ("cycle.state_changed", None, "created"),
            ("cycle.state_changed", "created", "training"),
            ("cycle.state_changed", "training", "scoring"),
            ("cycle.state_changed", "scoring", "labeling"),
            ("cycle.state_changed", "labeling", "completed"),
            ("batch.labelled", None, None),
        ]
        assert got[-1][1] == {
            "project_id": project.id,
            "cycle_id": cycle.id,
            "number": 1,
            "batch_size": 2,
        }
        assert _deliveries(db, budget_only) == []
        assert _deliveries(db, removed) == []
        assert (
            db.scalar(
                select(WebhookDelivery).where(
                    WebhookDelivery.payload.contains(f'"cycle_id":{other.id}')
                )
            )
            is None
        )
        db.rollback()
    with factory() as db:
        assert db.scalars(select(WebhookDelivery)).all() == []  # rolled back with the change


def test_a_cycle_closed_with_open_entries_is_no_labelled_batch(
    factory: sessionmaker[Session],
) -> None:
    with factory() as db:
        project = _project(db, "closed-early")
        hook = _hook(db, project, events=",batch.labelled,")
        item = Item(
            project_id=project.id,
            split="pool",
            external_id="i0",
            blob_sha256="0" * 64,
            media_type="application/x-float32",
            width=2,
            height=1,
            meta={},
        )
        db.add(item)
        db.commit()
    cycle_id = open_batch(factory, project.id, [item.id])
    with factory() as db:
        db.execute(update(Cycle).where(Cycle.id == cycle_id).values(state=CycleState.completed))
        assert _deliveries(db, hook) == []
        db.execute(update(Cycle).where(Cycle.id == cycle_id).values(state=CycleState.labeling))
        db.execute(
            update(QueueEntry).where(QueueEntry.cycle_id == cycle_id).values(state=QueueState.done)
        )
        db.execute(update(Cycle).where(Cycle.id == cycle_id).values(state=CycleState.completed))
        assert [e for e, _ in _deliveries(db, hook)] == ["batch.labelled"]


def test_budget_spent_once_when_labels_reach_it(factory: sessionmaker[Session]) -> None:
    with factory() as db:
        acquire = _project(db, "budgeted", label_budget=3)
        clean = _project(db, "cleaning", relabel_budget=1)
        clean.kind = ProjectKind.clean
        unbounded = _project(db, "unbounded")
        hooks = [_hook(db, p, events=",budget.spent,") for p in (acquire, clean, unbounded)]
        db.flush()
        for _ in range(4):
            for p in (acquire, clean, unbounded):
                db.execute(
                    update(Project)
                    .where(Project.id == p.id)
                    .values(labels_spent=Project.labels_spent + 1)
                )
        got = [_deliveries(db, h) for h in hooks]
        assert got[0] == [
            (
                "budget.spent",
                {"project_id": acquire.id, "kind": "acquire", "labels_spent": 3, "budget": 3},
            )
        ]
        assert got[1] == [
            (
                "budget.spent",
                {"project_id": clean.id, "kind": "clean", "labels_spent": 1, "budget": 1},
            )
        ]
        assert got[2] == []
