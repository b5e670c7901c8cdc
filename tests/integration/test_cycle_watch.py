"""The check that stops a cycle's training and scoring between batches (worker/pipeline/
cancel.py): what it decides from the cycle's row, and that it reads the row at most once per
interval."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.core.enums import CycleState, ProjectKind
from app.cycles.models import Cycle
from tests.api.helpers import create_project
from tests.conftest import Accounts
from worker.pipeline.cancel import CycleStopped, CycleTimeLimitExceeded, CycleWatch


def _training_cycle(factory: sessionmaker[Session], project_id: int) -> int:
    with factory() as db:
        cycle = Cycle(
            project_id=project_id,
            number=1,
            kind=ProjectKind.acquire,
            state=CycleState.training,
            strategy="entropy",
            params={},
            seed=0,
            batch_size=10,
            attempts=1,
            started_at=utcnow(),
        )
        db.add(cycle)
        db.commit()
        return cycle.id


def _set(factory: sessionmaker[Session], cycle_id: int, **values: object) -> None:
    with factory() as db:
        cycle = db.get(Cycle, cycle_id)
        assert cycle is not None
        for key, value in values.items():
            setattr(cycle, key, value)
        db.commit()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_stops_cancelled_superseded_and_overdue_cycles(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    cycle_id = _training_cycle(factory, create_project(app_client, accounts)["id"])
    clock = _Clock()
    watch = CycleWatch(factory, cycle_id, limit_s=60, phase="training", clock=clock)
    watch()
    assert watch.attempt == 1  # the attempt the first check found is the one it works for

    _set(factory, cycle_id, state=CycleState.cancelled)
    watch()  # within the interval: no query, so no news yet
    clock.now += 1.0
    with pytest.raises(CycleStopped, match=r"^cancelled while training$"):
        watch()

    _set(factory, cycle_id, state=CycleState.scoring, attempts=2)
    watch.phase = "scoring"
    with pytest.raises(CycleStopped, match="attempt 2 took over while scoring"):
        watch.check_now()

    shard = CycleWatch(factory, cycle_id, limit_s=60, attempt=2, phase="scoring shard 0")
    shard()
    _set(factory, cycle_id, started_at=utcnow() - timedelta(seconds=61))
    with pytest.raises(CycleTimeLimitExceeded, match="time limit of 60 s while scoring shard 0"):
        shard.check_now()


def test_a_guarded_dataset_asks_the_watch_before_each_read_and_keeps_targets() -> None:
    calls: list[int] = []

    class Data:
        targets = [[1.0, 0.0], [0.0, 1.0]]

        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> int:
            return index

    watch = CycleWatch(None, 0, limit_s=1)  # type: ignore[arg-type]
    watch.check_now = lambda: calls.append(1)  # type: ignore[method-assign]
    guarded = watch.guard(Data())  # type: ignore[arg-type]
    assert [guarded[0], guarded[1]] == [0, 1]
    assert len(guarded) == 2  # type: ignore[arg-type]
    assert guarded.targets == Data.targets  # type: ignore[attr-defined]
    assert len(calls) == 2  # every read asks the watch (which throttles itself, see above)
