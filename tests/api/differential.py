"""What the differential test (test_hot_path_differential.py) drives: one world of rows put
into each database, a frozen clock, random operations over HTTP, and a snapshot of every
table to compare."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import app.core.db
import app.db_models as models
from app.annotations.models import Annotation
from app.auth.models import Annotator, ApiToken
from app.core.enums import CycleState, LabelSource, ProjectKind, Role, Split
from app.core.security import hash_token
from app.cycles.models import Cycle
from app.items.models import Item
from app.projects.models import Project, ProjectMember
from app.queue.models import QueueEntry

PEOPLE = ("admin", "ann", "bea", "cid", "outsider")  # ids 1-5; the three in the middle label
CLASSES = ["a", "b", "c"]
START = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    """``app.core.db.utcnow`` reads it: every timestamp either path writes comes from here
    (the hot path is handed ``now`` by Python too)."""

    now: datetime = START


@contextmanager
def frozen(clock: Clock) -> Iterator[None]:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return clock.now

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.core.db, "datetime", Frozen)
        yield


def token(who: str) -> str:
    return f"al_differential-{who}"


@dataclass
class Recorder:
    """The tasks a path asked for, in order (sent after their commit)."""

    sent: list[tuple[str, list[Any], str]] = field(default_factory=list)

    def send(self, name: str, args: list[Any], queue: str) -> None:
        self.sent.append((name, args, queue))


def build_world(db: Session, seed: int, secret: str) -> int:
    """Accounts, one project, five pool items and a test item, and a labelling cycle queueing
    the pool items (some ranks tied). Seeds take turns: a cleaning project whose items carry
    one imported vote each (a human vote can tie it); a labelling project wanting two or
    three labels an item (the first, or two that agree, decide it); one wanting one label an
    item with no budget (its last label finishes the cycle); then anything drawn. Returns
    the project id."""
    rng = random.Random(seed)
    variant = seed % 4
    for who in PEOPLE:
        person = Annotator(name=who, role=Role.admin if who == "admin" else Role.annotator)
        db.add(person)
        db.flush()
        db.add(
            ApiToken(annotator_id=person.id, token_hash=hash_token(token(who), secret), prefix=who)
        )
    clean = variant == 0 or (variant == 3 and rng.random() < 0.4)
    n = 5
    project = Project(
        name="differential",
        kind=ProjectKind.clean if clean else ProjectKind.acquire,
        classes=CLASSES,
        model_spec={"name": "mlp", "input_shape": [4]},
        strategy="ce_minus_entropy" if clean else "entropy",
        strategy_params={},
        labels_per_item={1: 2 + seed // 4 % 2, 2: 1}.get(variant, rng.choice([1, 2, 3])),
        label_budget=None if clean or variant in (1, 2) else rng.choice([None, 2, 4, 6]),
        relabel_budget=rng.choice([None, 3, 5]) if clean else None,
        finetune_every=rng.choice([None, 2, 3]),
        batch_size=n,
        stop_when_decided=variant == 1 or rng.random() < 0.6,
    )
    db.add(project)
    db.flush()
    db.add_all(ProjectMember(project_id=project.id, annotator_id=i) for i in (2, 3, 4))
    items = [
        Item(
            project_id=project.id,
            split=Split.test if k == n else Split.pool,
            blob_sha256=f"{k:064x}",
            media_type="application/x-npy",
            width=4,
            height=1,
            external_id=f"x{k}",
        )
        for k in range(n + 1)
    ]
    db.add_all(items)
    db.flush()
    if clean:  # the crowd's votes, one an item (by the outsider: an account, not a member)
        db.add_all(
            Annotation(
                item_id=item.id,
                project_id=project.id,
                annotator_id=5,
                class_index=rng.choice([0, 1]),
                source=LabelSource.import_,
                idempotency_key=f"import:{item.id}",
            )
            for item in items[:n]
        )
    cycle = Cycle(
        project_id=project.id,
        number=1,
        kind=project.kind,
        state=CycleState.labeling,
        strategy="activelab" if clean and rng.random() < 0.3 else project.strategy,
        params={},
        seed=0,
        batch_size=n,
    )
    db.add(cycle)
    db.flush()
    stop_lead = rng.choice([None, None, 1, 2])
    for rank, item in zip([rng.randrange(3) for _ in range(n)], items[:n], strict=True):
        db.add(
            QueueEntry(
                project_id=project.id,
                cycle_id=cycle.id,
                item_id=item.id,
                rank=rank,
                score=0.0,
                labels_wanted=1 if clean else project.labels_per_item,
                stop_lead=stop_lead,
            )
        )
    db.commit()
    return project.id


Answer = tuple[int, Any]
Op = Callable[[TestClient], Answer]


class Operations:
    """Draws the next operation from the seed and the answers so far (the same on every
    path, or the test has already failed)."""

    def __init__(self, rng: random.Random, project_id: int, clock: Clock, lease_s: int) -> None:
        self.rng, self.pid, self.clock, self.lease_s = rng, project_id, clock, lease_s
        self.sent: list[tuple[str, dict[str, Any]]] = []  # (who, body) of submits answered 201
        self.leases: list[tuple[str, int, int]] = []  # (who, lease id, item id) answered
        self.holding: dict[str, list[int]] = {}  # items of each one's latest next or undo
        self.keys = 0

    def draw(self) -> tuple[str, Op | None]:
        """A description and the request; None: the clock moved."""
        rng = self.rng
        who = rng.choice(PEOPLE[1:4]) if rng.random() < 0.9 else rng.choice(PEOPLE)
        kind = rng.choices(
            ["next", "submit", "replay", "skip", "undo", "clock", "bad_token"],
            weights=[30, 40, 8, 5, 3, 6, 2],
        )[0]
        if kind == "clock":
            step = rng.choice([1, self.lease_s, self.lease_s + 1])
            self.clock.now += timedelta(seconds=step)
            return f"clock +{step}s", None
        if kind == "next" or kind == "bad_token":
            ahead = rng.choice([0, 1])
            url = f"/api/v1/projects/{self.pid}/next?ahead={ahead}"
            auth = "al_wrong" if kind == "bad_token" else token(who)
            return f"{who} next ahead={ahead}", self._get(url, auth)
        if kind == "submit":
            held = self.holding.get(who, [])
            # Mostly an item leased to the caller (maybe no longer), else any item: the pool
            # items and the test item (id 6).
            item = rng.choice(held) if held and rng.random() < 0.8 else rng.randrange(1, 7)
            body: dict[str, Any] = {"class_index": rng.choice([0, 0, 1, 1, 2, 3])}
            if rng.random() < 0.8:
                self.keys += 1
                body["idempotency_key"] = f"key-{self.keys:06d}"
            return f"{who} submit {item} {body}", self._post(
                f"/api/v1/items/{item}/annotations", token(who), body, who
            )
        if kind == "replay" and self.sent:
            earlier_who, body = rng.choice(self.sent)
            if rng.random() < 0.3:  # the key again for another class
                body = {**body, "class_index": (body["class_index"] + 1) % len(CLASSES)}
            return f"{earlier_who} resend {body}", self._post(
                f"/api/v1/items/{body['item']}/annotations", token(earlier_who), body, None
            )
        if kind == "skip" and self.leases:
            owner, lease, _ = rng.choice(self.leases)
            skipper = owner if rng.random() < 0.8 else who
            url = f"/api/v1/leases/{lease}/skip"
            return f"{skipper} skip lease {lease}", self._post(url, token(skipper), None, None)
        url = f"/api/v1/projects/{self.pid}/annotations:undo"
        return f"{who} undo", self._post(url, token(who), None, None)

    def _get(self, url: str, auth: str) -> Op:
        def run(client: TestClient) -> Answer:
            r = client.get(url, headers={"Authorization": f"Bearer {auth}"})
            return r.status_code, r.json()

        return run

    def _post(self, url: str, auth: str, body: dict[str, Any] | None, who: str | None) -> Op:
        payload = None if body is None else {k: v for k, v in body.items() if k != "item"}

        def run(client: TestClient) -> Answer:
            r = client.post(url, headers={"Authorization": f"Bearer {auth}"}, json=payload)
            return r.status_code, (r.json() if r.content else None)

        return run

    def learn(self, description: str, answer: Answer) -> None:
        """Remember leases handed out and labels stored, for later skips and resends."""
        status, body = answer
        if (status != 200 and status != 201) or not isinstance(body, dict):
            return
        who = description.split()[0]
        if "status" in body:  # an answer to next or undo
            self.holding[who] = []
        for lease in (body.get("lease"), (body.get("ahead") or {}).get("lease")):
            if lease:
                self.leases.append((who, lease["id"], lease["item_id"]))
                self.holding[who].append(lease["item_id"])
        if status == 201 and body.get("item_id") in self.holding.get(who, []):
            self.holding[who].remove(body["item_id"])
        if status == 201 and "item_id" in body:
            sent = {"class_index": body["class_index"], "item": body["item_id"]}
            if body.get("idempotency_key"):
                sent["idempotency_key"] = body["idempotency_key"]
                self.sent.append((who, sent))


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in id order, as comparable values."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with Session(engine) as db:
        for table in models.Base.metadata.sorted_tables:
            order = list(table.primary_key.columns)
            rows = db.execute(select(table).order_by(*order)).all()
            out[table.name] = [tuple(_plain(v) for v in row) for row in rows]
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value
