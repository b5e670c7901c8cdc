"""Cycle state changes, each its own short transaction, each a compare-and-set on the state.

A redelivered task, a cancel from the API, and a worker that finishes late all race on the
same row; guarding every write with "only if the state is still what I expect" means exactly
one of them wins and the others stop without side effects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.annotations.confidence import decided_lead
from app.annotations.derived import vote_accuracy
from app.annotations.models import Annotation
from app.core.blobs import BlobStore
from app.core.claims import may_take_over
from app.core.db import unit_of_work, utcnow
from app.core.enums import CycleState, LabelSource, LeaseOutcome, QueueState, Split
from app.core.tasks import TaskSender, bind_sender, send_after_commit
from app.cycles.models import Cycle
from app.cycles.states import RUNNING, transition
from app.cycles.strategies import MIXED_QUEUE_STRATEGY
from app.gold.models import GoldLabel
from app.items.models import Item
from app.projects.models import Project
from app.queue.models import Lease, QueueEntry
from worker.pipeline.snapshot import CycleInputs, load_inputs


def claim(
    factory: sessionmaker[Session],
    cycle_id: int,
    blobs: BlobStore | None = None,
    *,
    task_id: str | None = None,
    takeover: bool = False,
) -> CycleInputs | None:
    """Move the cycle to ``training`` for the task message ``task_id`` (Celery's id, which a
    redelivered message keeps) and snapshot its inputs; None if it needs no work or is not
    this message's to run. ``blobs``: where CROWDLAB targets find the last cycle's held-out
    probabilities.

    Any message claims a ``created`` cycle. One left ``training`` or ``scoring`` is taken
    over only by the redelivery of the message that claimed it (its worker died before the
    ack), or with ``takeover`` (``worker.recovery``: at the embedded broker's start no worker
    holds it). Another copy (a second retry's, the sweep's re-send, a late original) stops:
    it would train the cycle a second time beside the worker that runs it."""
    waiting = Cycle.state == CycleState.created
    guard = None if takeover else may_take_over(waiting, Cycle.claimed_by, task_id)
    with unit_of_work(factory) as db:
        if not transition(
            db,
            cycle_id,
            CycleState.training,
            expect=RUNNING,
            guard=guard,
            attempts=Cycle.attempts + 1,
            started_at=utcnow(),
            error=None,
            claimed_by=task_id,
        ):
            return None
        cycle = db.get_one(Cycle, cycle_id)
        inputs = load_inputs(db, cycle, blobs)
        cycle.labelled_set_hash = inputs.labelled_set_hash
        return inputs


def advance(
    factory: sessionmaker[Session],
    cycle_id: int,
    *,
    expect: CycleState,
    to: CycleState,
    **fields: Any,
) -> bool:
    with unit_of_work(factory) as db:
        return bool(transition(db, cycle_id, to, expect=expect, **fields))


def open_queue(
    factory: sessionmaker[Session],
    inputs: CycleInputs,
    item_ids: Sequence[int],
    scores: Sequence[float | None],
    *,
    attempt: int | None = None,
    carry_open: bool = False,
    **fields: Any,
) -> bool:
    """Atomically: the cycle goes ``scoring`` → ``labeling`` (while it runs ``attempt``, if
    given: the merge of a sharded run) and its queue is written.

    Earlier cycles still in ``labeling`` are completed. Their open entries are closed, so
    annotators move on to the new batch — or, with ``carry_open`` (cleaning, where an item
    being relabelled must keep its place until its votes settle), moved to the new cycle
    ahead of the new items, leases and counts intact.
    """
    with unit_of_work(factory) as db:
        lead = _confident_lead(db, inputs, fields)
        if not transition(
            db,
            inputs.cycle_id,
            CycleState.labeling,
            expect=CycleState.scoring,
            attempt=attempt,
            **fields,
        ):
            return False
        carried = _close_earlier_cycles(db, inputs, carry_open)
        ranked = list(zip(item_ids, scores, strict=True))
        _write_entries(db, inputs, ranked, carried, stop_lead=lead)
        return True


def _confident_lead(db: Session, inputs: CycleInputs, fields: dict[str, Any]) -> int | None:
    """The ``stop_lead`` of this cycle's entries under the project's ``confidence_target``
    (None when it is off, labels_per_item is 1, or the votes cannot estimate the annotators'
    accuracy yet); recorded in ``fields["metrics"]`` so the cycle shows what it used."""
    project = db.get(Project, inputs.project_id)
    assert project is not None
    if project.confidence_target is None or inputs.labels_per_item < 2:
        return None
    accuracy = vote_accuracy(db, project)
    lead = (
        None
        if math.isnan(accuracy)
        else decided_lead(project.confidence_target, accuracy, len(project.classes))
    )
    if "metrics" in fields:
        fields["metrics"] = {
            **fields["metrics"],
            "confident_stop": {
                "target": project.confidence_target,
                "vote_accuracy": None if math.isnan(accuracy) else round(accuracy, 6),
                "stop_lead": lead,
            },
        }
    return lead


def open_cleaning_queue(
    factory: sessionmaker[Session],
    inputs: CycleInputs,
    ranked: Sequence[tuple[int, float]],
    *,
    metrics: dict[str, Any],
    attempt: int | None = None,
    sender: TaskSender | None = None,
    **fields: Any,
) -> bool:
    """Cleaning: atomically ``scoring`` → ``labeling`` and the new ranking queued.

    Items being relabelled now (a label given or a lease open) keep their entries and go
    first; the untouched rest of the last ranking gives way to this one. ``ranked``: (item id,
    score), best first, over every labelled item. Cleaned items and items carried over are
    skipped; the queue is filled to ``cleaning_queue_depth``. Reading those sets here, in the
    transaction that writes the queue, means a label given while the cycle trained can
    neither make an item queued twice nor be missed.
    """
    with unit_of_work(factory) as db:
        if sender is not None:
            bind_sender(db, sender)
        if not transition(
            db,
            inputs.cycle_id,
            CycleState.labeling,
            expect=CycleState.scoring,
            attempt=attempt,
            **fields,
        ):
            return False
        project = db.get(Project, inputs.project_id)
        assert project is not None
        carried = _close_earlier_cycles(db, inputs, carry_open=True)
        mixed = inputs.strategy == MIXED_QUEUE_STRATEGY
        # Cleaned items are done for good; the mixed queue may ask an item again, one
        # label at a time, whenever its score comes first.
        states = (QueueState.open,) if mixed else (QueueState.done, QueueState.open)
        blocked = set(
            db.scalars(
                select(QueueEntry.item_id).where(
                    QueueEntry.project_id == inputs.project_id,
                    QueueEntry.state.in_(states),
                )
            )
        )
        # Items with gold are known: never relabelled (they may come back as honeypots).
        blocked.update(
            db.scalars(select(GoldLabel.item_id).where(GoldLabel.project_id == inputs.project_id))
        )
        depth = cleaning_queue_depth(inputs.batch_size, project.finetune_every)
        fresh = [(i, s) for i, s in ranked if i not in blocked][: max(depth - carried, 0)]
        honeypots = _write_entries(
            db, inputs, list(fresh), carried, labels_wanted=1 if mixed else None
        )
        queued: dict[str, Any] = {
            "queued": len(fresh),
            "carried_over": carried,
            "honeypots": honeypots,
        }
        if mixed:
            new = set(inputs.candidates.ids)
            queued["queued_new"] = sum(1 for i, _ in fresh if i in new)
        db.execute(
            update(Cycle).where(Cycle.id == inputs.cycle_id).values(metrics={**metrics, **queued})
        )
        if sender is not None:
            _catch_up_refresh(db, project, inputs)
        return True


def _catch_up_refresh(db: Session, project: Project, inputs: CycleInputs) -> None:
    """A re-rank is due every ``finetune_every`` labels, but one asked for while this cycle
    was training was dropped (one runs at a time). If ``finetune_every`` labels or more came
    in since this cycle read its inputs, start the next one now, in this transaction."""
    if not project.finetune_every:
        return
    if project.labels_spent - inputs.labels_spent >= project.finetune_every:
        from app.cycles.service import refresh_cleaning  # the API's rule for starting one

        refresh_cleaning(db, project.id)


def _write_entries(
    db: Session,
    inputs: CycleInputs,
    ranked: list[tuple[int, float | None]],
    carried: int,
    *,
    labels_wanted: int | None = None,
    stop_lead: int | None = None,
) -> int:
    """Queue ``ranked`` after the ``carried`` entries, with the project's honeypots spread
    evenly through it; returns how many honeypots were queued. Each entry wants
    ``labels_wanted`` labels (default: the project's labels_per_item) and stops early at
    ``stop_lead`` (``QueueEntry.stop_lead``)."""
    project = db.get(Project, inputs.project_id)
    assert project is not None
    honeypots = _honeypots(db, project, len(ranked), inputs.seed)
    entries: list[tuple[int, float | None]] = list(ranked)
    for j, item_id in enumerate(honeypots):
        # Evenly spread: honeypot j of h goes after (j + 1) / (h + 1) of the batch.
        at = round((j + 1) * len(ranked) / (len(honeypots) + 1)) + j
        entries.insert(at, (item_id, None))
    db.add_all(
        QueueEntry(
            project_id=inputs.project_id,
            cycle_id=inputs.cycle_id,
            item_id=item_id,
            rank=carried + rank,
            score=score,
            labels_wanted=labels_wanted or inputs.labels_per_item,
            stop_lead=stop_lead,
            state=QueueState.open,
        )
        for rank, (item_id, score) in enumerate(entries)
    )
    return len(honeypots)


def _honeypots(db: Session, project: Project, batch: int, seed: int) -> list[int]:
    """ceil(rate x batch) pool items with gold that nobody has labelled or is labelling,
    drawn with the cycle's seed. Only fresh ones: an item every annotator had already
    labelled could never be handed out, and its entry would hold the cycle open forever."""
    if project.honeypot_rate <= 0 or batch == 0:
        return []
    wanted = math.ceil(project.honeypot_rate * batch)
    gold = db.scalars(
        select(GoldLabel.item_id)
        .join(Item, Item.id == GoldLabel.item_id)
        .where(GoldLabel.project_id == project.id, Item.split == Split.pool)
        .order_by(GoldLabel.item_id)
    ).all()
    if not gold:
        return []
    voted = set(
        db.scalars(
            select(Annotation.item_id).where(
                Annotation.project_id == project.id,
                Annotation.source.in_((LabelSource.human, LabelSource.oracle)),
                Annotation.retracted_at.is_(None),
            )
        )
    )
    queued = set(
        db.scalars(
            select(QueueEntry.item_id).where(
                QueueEntry.project_id == project.id, QueueEntry.state == QueueState.open
            )
        )
    )
    fresh = [i for i in gold if i not in voted and i not in queued]
    rng = np.random.default_rng([seed, 104_729])
    picks = rng.permutation(len(fresh))[:wanted]
    return [int(fresh[i]) for i in sorted(picks)]


def cleaning_queue_depth(batch_size: int, finetune_every: int | None) -> int:
    """How many ranked items a cleaning queue holds. At least ``batch_size``; with re-ranking
    every b labels, 2b: the re-rank starts after b labels, which touch at most b items, so b
    more stay to hand out while the worker fine-tunes (annotators never wait for it)."""
    return max(batch_size, 2 * finetune_every) if finetune_every else batch_size


def _close_earlier_cycles(db: Session, inputs: CycleInputs, carry_open: bool) -> int:
    """Complete earlier labelling cycles; returns how many open entries were carried over."""
    now = utcnow()
    earlier = db.scalars(
        select(Cycle.id).where(
            Cycle.project_id == inputs.project_id,
            Cycle.id != inputs.cycle_id,
            Cycle.state == CycleState.labeling,
        )
    ).all()
    if not earlier:
        return 0
    transition(db, earlier, CycleState.completed, expect=CycleState.labeling, finished_at=now)
    if carry_open:
        open_earlier = db.scalars(
            select(QueueEntry)
            .where(QueueEntry.cycle_id.in_(earlier), QueueEntry.state == QueueState.open)
            .order_by(QueueEntry.rank, QueueEntry.id)
        ).all()
        moving = [e for e in open_earlier if e.labels_received > 0 or e.leases_open > 0]
        for entry in open_earlier:
            if entry.labels_received == 0 and entry.leases_open == 0:
                entry.state = QueueState.cancelled  # untouched: the new ranking decides
        for rank, entry in enumerate(moving):
            entry.cycle_id = inputs.cycle_id
            entry.rank = rank
        db.flush()
        return len(moving)
    open_entries = select(QueueEntry.id).where(
        QueueEntry.cycle_id.in_(earlier), QueueEntry.state == QueueState.open
    )
    db.execute(
        update(Lease)
        .where(Lease.queue_entry_id.in_(open_entries), Lease.released_at.is_(None))
        .values(released_at=now, outcome=LeaseOutcome.cancelled)
    )
    db.execute(
        update(QueueEntry)
        .where(QueueEntry.cycle_id.in_(earlier), QueueEntry.state == QueueState.open)
        .values(state=QueueState.cancelled)
    )
    return 0


def fail(
    factory: sessionmaker[Session], cycle_id: int, error: str, *, attempt: int | None = None
) -> bool:
    """The cycle is ``failed`` with ``error``, if it is still running (``attempt``, if
    given: a shard or fold task fails only the attempt it was sent for)."""
    with unit_of_work(factory) as db:
        return bool(
            transition(
                db,
                cycle_id,
                CycleState.failed,
                expect=RUNNING,
                attempt=attempt,
                error=error[-4000:],
                finished_at=utcnow(),
            )
        )


# --- Sharded scoring (worker/pipeline/shards.py) ---------------------------------------------
# A sharded cycle stays in ``scoring`` while its shard tasks run. Each claim bumps
# ``cycle.attempts``, and every shard and merge task carries the attempt it was sent for: the
# guards below also compare it, so tasks left over from an earlier attempt (a redelivered train
# task, a retry after a failure) can neither record results, fail, nor open the queue.

Task = tuple[str, list[Any], str]  # (task name, args, queue), sent after the commit


def change_locked(
    factory: sessionmaker[Session],
    cycle_id: int,
    sender: TaskSender,
    change: Callable[[Cycle], Sequence[Task]],
    *,
    expect: CycleState,
    to: CycleState | None = None,
    attempt: int | None = None,
) -> bool:
    """Lock the cycle if it is in ``expect`` (and at ``attempt``), move it to ``to`` (by the
    transition table; None: it stays), let ``change`` edit its other fields and name tasks;
    they are sent only after the commit. False when the guard did not hold."""
    with unit_of_work(factory) as db:
        bind_sender(db, sender)
        if to is not None:
            # The update keeps the row locked until the commit, as FOR UPDATE would.
            if not transition(db, cycle_id, to, expect=expect, attempt=attempt):
                return False
            cycle: Cycle | None = db.get_one(Cycle, cycle_id)
        else:
            query = select(Cycle).where(Cycle.id == cycle_id, Cycle.state == expect)
            if attempt is not None:
                query = query.where(Cycle.attempts == attempt)
            cycle = db.scalar(query.with_for_update())
        if cycle is None:
            return False
        for name, args, queue in change(cycle):
            send_after_commit(db, name, args, queue)
        return True


def record_done(
    factory: sessionmaker[Session],
    sender: TaskSender,
    cycle_id: int,
    attempt: int,
    key: str,
    index: int,
    result: dict[str, Any],
    total: int,
    then: Task,
) -> bool:
    """Record part ``index`` of ``metrics[key]["done"]`` under the row lock, while the cycle
    is scoring this attempt; the part that completes the set (``total`` parts) sends
    ``then``. Recording a part twice changes nothing (the map is keyed by index)."""

    def record(row: Cycle) -> list[Task]:
        progress = dict(row.metrics[key])
        progress["done"] = {**progress["done"], str(index): result}
        row.metrics = {**row.metrics, key: progress}
        return [then] if len(progress["done"]) == total else []

    return change_locked(
        factory, cycle_id, sender, record, expect=CycleState.scoring, attempt=attempt
    )


def scoring_cycle(factory: sessionmaker[Session], cycle_id: int, attempt: int) -> Cycle | None:
    """The cycle (detached, read-only use) if it is still scoring at ``attempt``, else None."""
    with unit_of_work(factory) as db:
        return db.scalar(
            select(Cycle).where(
                Cycle.id == cycle_id,
                Cycle.state == CycleState.scoring,
                Cycle.attempts == attempt,
            )
        )
