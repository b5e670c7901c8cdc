"""Re-sending the cycle tasks that a broker outage lost.

``send_after_commit`` sends ``advance``, ``refresh`` and ``run`` after the state change has
committed; if the broker is down then, the send fails and is only logged. Each of those
tasks leaves a state in the database that only it would change, so a periodic sweep can
find what was lost and send it again:

* a project's latest cycle is ``labeling`` and its batch is labelled (no open entry, one
  done at least) → ``advance``;
* a cycle is ``created`` and nobody claimed it → ``run``;
* a pretraining run is ``queued`` and nobody claimed it → its task;
* a cleaning project has no running cycle, budget left and ``finetune_every`` labels or more
  since its latest cycle read its inputs → ``refresh``.

A state must last ``grace_s`` (seen at two sweeps that far apart) before its task is sent,
and a task is sent again at most every ``grace_s``, so a task still queued behind a busy
worker is rarely doubled. Doubles are harmless: ``advance`` and ``refresh`` lock the project
row and check the state (``app.cycles.service``); ``run`` and the pretraining task claim in
one compare-and-set a cycle still ``created`` (a run still ``queued``), and take over one
begun only as the redelivery of the message that claimed it, by its task id
(``worker.pipeline.transitions.claim``, ``worker.pipeline.pretrain``): a copy that comes
after the original began (or the original after the copy) does nothing, and a copy whose
worker died is redelivered and takes its own run over. That is also why several API
processes may sweep at once. A send that fails is tried again at the next sweep.

It runs in the API process (``app.main``'s lifespan): every setup has one (``annoloop up``,
compose's ``api``), while workers may be absent, many, or on hosts without the API's
settings, and Celery beat runs nowhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from app.annotations.models import Annotation
from app.core.config import Settings
from app.core.enums import CycleState, LabelSource, PretrainingStatus, ProjectKind, QueueState
from app.core.task_names import ADVANCE, PRETRAIN, REFRESH, RUN_CYCLE, Message
from app.core.tasks import TaskSender
from app.cycles.models import Cycle
from app.cycles.states import RUNNING
from app.pretraining.models import Pretraining
from app.projects.models import Project
from app.queue.models import QueueEntry

log = logging.getLogger(__name__)
Task = Message


def lost_tasks(db: Session) -> Iterator[Task]:
    """The tasks the database says are owed: see the module's docstring."""
    newer = aliased(Cycle)
    latest = ~exists().where(newer.project_id == Cycle.project_id, newer.number > Cycle.number)

    def entry(state: QueueState) -> Any:
        return exists().where(QueueEntry.cycle_id == Cycle.id, QueueEntry.state == state)

    labelled = select(Cycle.project_id).where(
        Cycle.state == CycleState.labeling, latest, entry(QueueState.done), ~entry(QueueState.open)
    )
    for project_id in db.scalars(labelled):
        yield ADVANCE.message([project_id])
    for cycle_id in db.scalars(select(Cycle.id).where(Cycle.state == CycleState.created)):
        yield RUN_CYCLE.message([cycle_id])
    queued = select(Pretraining.id).where(Pretraining.status == PretrainingStatus.queued)
    for run_id in db.scalars(queued):
        yield PRETRAIN.message([run_id])
    yield from _due_refreshes(db)


def _due_refreshes(db: Session) -> Iterator[Task]:
    running = exists().where(Cycle.project_id == Project.id, Cycle.state.in_(RUNNING))
    projects = select(Project).where(
        Project.kind == ProjectKind.clean, Project.finetune_every.is_not(None), ~running
    )
    for project in db.scalars(projects):
        if project.budget is not None and project.labels_spent >= project.budget:
            continue
        read_at = db.scalar(
            select(func.max(Cycle.started_at)).where(Cycle.project_id == project.id)
        )
        if read_at is None:
            continue  # no cycle ever read inputs: the first one is started by hand
        since = db.scalar(
            select(func.count(Annotation.id)).where(
                and_(
                    Annotation.project_id == project.id,
                    Annotation.source == LabelSource.human,
                    Annotation.created_at >= read_at,
                )
            )
        )
        assert project.finetune_every is not None
        if (since or 0) >= project.finetune_every:
            yield REFRESH.message([project.id])


@dataclass
class Reconciler:
    factory: sessionmaker[Session]
    sender: TaskSender
    grace_s: float
    clock: Callable[[], float] = time.monotonic
    # task → when its state was first seen, or its task last sent
    _since: dict[tuple[str, tuple[Any, ...]], float] = field(default_factory=dict)

    def sweep(self) -> list[Task]:
        with self.factory() as db:
            owed = list(lost_tasks(db))
        now, since, sent = self.clock(), {}, []
        for name, args, queue in owed:
            key = (name, tuple(args))
            first = self._since.get(key, now)
            if now - first >= self.grace_s:
                try:
                    self.sender.send(name, args, queue)
                    log.warning("re-sent task %s%s, lost or late", name, tuple(args))
                    sent.append((name, args, queue))
                    first = now
                except Exception:
                    log.warning("could not re-send %s%s; next sweep", name, tuple(args))
            since[key] = first
        self._since = since  # a state no longer seen is forgotten
        return sent


class SweepThread:
    """``Reconciler.sweep`` every ``interval_s`` on a daemon thread, from ``start`` to
    ``stop`` (the app's lifespan; a test may run it more than once)."""

    def __init__(self, reconciler: Reconciler, interval_s: float) -> None:
        self.reconciler, self.interval_s = reconciler, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.reconciler.sweep()
            except Exception:  # the database may be down too: try again next time
                log.exception("reconcile sweep failed")


def make_sweep(
    settings: Settings, factory: sessionmaker[Session], sender: TaskSender, own_sessions: bool
) -> SweepThread | None:
    if not own_sessions or settings.reconcile_interval_s <= 0:
        return None
    reconciler = Reconciler(factory, sender, settings.reconcile_grace_s)
    return SweepThread(reconciler, settings.reconcile_interval_s)
