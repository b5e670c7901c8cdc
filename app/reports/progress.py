"""Where a project stands: budget, queue, people, speed."""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.annotations.derived import derive
from app.annotations.models import Annotation
from app.annotations.votes import summarise
from app.auth.models import Annotator
from app.core.db import utcnow
from app.core.enums import LabelSource, ProjectKind, QueueState
from app.cycles import repository as cycles
from app.gold import repository as gold_labels
from app.projects.models import Project
from app.queue.models import Lease, QueueEntry
from app.reports.people_stats import PeopleStats, compute
from app.reports.schemas import AnnotatorCount, CleaningProgress, CycleProgress, Progress

RATE_WINDOW = timedelta(minutes=10)
_COUNTED = (LabelSource.human, LabelSource.oracle)


def progress(db: Session, project: Project, people: PeopleStats | None = None) -> Progress:
    """``people``: the heavy statistics (``people_stats``); computed here when not given."""
    current = cycles.latest(db, project.id)
    cycle_view = None
    depth = slots = 0
    if current is not None:
        rows = dict(
            db.execute(
                select(QueueEntry.state, func.count(QueueEntry.id))
                .where(QueueEntry.cycle_id == current.id)
                .group_by(QueueEntry.state)
            ).all()
        )
        depth = int(rows.get(QueueState.open, 0))
        cycle_view = CycleProgress(
            id=current.id,
            number=current.number,
            state=current.state.value,
            queued=int(sum(rows.values())),
            done=int(rows.get(QueueState.done, 0)),
            open=depth,
        )
        slots = int(
            db.scalar(
                select(
                    func.coalesce(
                        func.sum(QueueEntry.labels_wanted - QueueEntry.labels_received), 0
                    )
                ).where(QueueEntry.cycle_id == current.id, QueueEntry.state == QueueState.open)
            )
            or 0
        )
    leases = int(
        db.scalar(
            select(func.count(Lease.id)).where(
                Lease.project_id == project.id, Lease.released_at.is_(None)
            )
        )
        or 0
    )
    people = people or compute(db, project)
    recent = int(
        db.scalar(
            select(func.count(Annotation.id)).where(
                Annotation.project_id == project.id,
                Annotation.source.in_(_COUNTED),
                Annotation.created_at >= utcnow() - RATE_WINDOW,
            )
        )
        or 0
    )
    rate = recent / (RATE_WINDOW.total_seconds() / 60)
    budget = project.budget
    remaining = None if budget is None else max(budget - project.labels_spent, 0)
    return Progress(
        labels_spent=project.labels_spent,
        label_budget=budget,
        labels_remaining=remaining,
        queue_depth=depth,
        slots_open=slots,
        leases_open=leases,
        cycle=cycle_view,
        per_annotator=people.per_annotator,
        labels_last_10_min=recent,
        rate_per_minute=rate,
        eta_seconds=(slots / rate * 60) if rate > 0 and slots else None,
        tied_items=people.tied_items,
        cleaning=people.cleaning,
        stats_as_of=people.as_of,
    )


def cleaning_progress(db: Session, project: Project) -> CleaningProgress | None:
    if project.kind is not ProjectKind.clean:
        return None
    cleaned = db.scalar(
        select(func.count(func.distinct(QueueEntry.item_id))).where(
            QueueEntry.project_id == project.id, QueueEntry.state == QueueState.done
        )
    )
    imported: dict[int, list[int]] = {}
    everything: dict[int, list[int]] = {}
    for item_id, k, source in db.execute(
        select(Annotation.item_id, Annotation.class_index, Annotation.source).where(
            Annotation.project_id == project.id, Annotation.retracted_at.is_(None)
        )
    ):
        everything.setdefault(item_id, []).append(k)
        if source is LabelSource.import_:
            imported.setdefault(item_id, []).append(k)
    c = len(project.classes)
    relabelled = [i for i, ks in everything.items() if len(ks) > len(imported.get(i, []))]
    changed = sum(
        summarise(imported.get(i, []), c).majority != summarise(everything[i], c).majority
        for i in relabelled
    )
    return CleaningProgress(
        relabel_budget=project.relabel_budget,
        items_cleaned=int(cleaned or 0),
        items_relabelled=len(relabelled),
        majority_changed=int(changed),
    )


def per_annotator(db: Session, project: Project) -> list[AnnotatorCount]:
    votes = db.execute(
        select(
            Annotation.item_id, Annotation.annotator_id, Annotation.class_index, Annotation.source
        ).where(Annotation.project_id == project.id, Annotation.retracted_at.is_(None))
    ).all()
    c = len(project.classes)
    counts: dict[int, list[int]] = {}
    for item_id, _, k, _ in votes:
        counts.setdefault(item_id, [0] * c)[k] += 1
    gold = gold_labels.of_project(db, project.id)
    labels: Counter[int] = Counter()
    agree: Counter[int] = Counter()
    settled: Counter[int] = Counter()
    gold_right: Counter[int] = Counter()
    gold_seen: Counter[int] = Counter()
    for item_id, annotator_id, k, source in votes:
        if source not in _COUNTED:
            continue
        labels[annotator_id] += 1
        others = list(counts[item_id])
        others[k] -= 1  # leave this vote out: agreement is with the other people
        top = max(others)
        if top > 0 and others.count(top) == 1:
            settled[annotator_id] += 1
            agree[annotator_id] += int(others[k] == top)
        if item_id in gold:
            gold_seen[annotator_id] += 1
            gold_right[annotator_id] += int(k == gold[item_id])
    names = dict(
        db.execute(select(Annotator.id, Annotator.name).where(Annotator.id.in_(list(labels)))).all()
    )
    estimated = _estimated_accuracy(db, project) if labels else {}
    return [
        AnnotatorCount(
            annotator_id=aid,
            name=names[aid],
            labels=labels[aid],
            agreement=agree[aid] / settled[aid] if settled[aid] else None,
            agreement_items=settled[aid],
            gold_accuracy=gold_right[aid] / gold_seen[aid] if gold_seen[aid] else None,
            gold_items=gold_seen[aid],
            estimated_accuracy=estimated.get(aid),
        )
        for aid in sorted(labels)
    ]


def _estimated_accuracy(db: Session, project: Project) -> dict[int, float]:
    """Dawid–Skene's P(correct) per annotator, where any of their items has a second vote."""
    derived = derive(db, project, None, "dawid_skene")
    if derived.annotator_accuracy is None or not derived.tied.size:
        return {}
    shared = _shared_voters(db, project)
    return {
        aid: float(acc)
        for aid, acc in zip(derived.annotator_ids, derived.annotator_accuracy, strict=True)
        if aid in shared and math.isfinite(float(acc))
    }


def _shared_voters(db: Session, project: Project) -> set[int]:
    """Annotators with a vote on an item someone else voted on too."""
    by_item: dict[int, set[int]] = {}
    for item_id, annotator_id in db.execute(
        select(Annotation.item_id, Annotation.annotator_id).where(
            Annotation.project_id == project.id, Annotation.retracted_at.is_(None)
        )
    ):
        by_item.setdefault(item_id, set()).add(annotator_id)
    return {a for voters in by_item.values() if len(voters) > 1 for a in voters}


def tied_items(db: Session, project: Project) -> int:
    votes = (
        select(Annotation.item_id, Annotation.class_index, func.count().label("n"))
        .where(Annotation.project_id == project.id, Annotation.retracted_at.is_(None))
        .group_by(Annotation.item_id, Annotation.class_index)
        .subquery()
    )
    top = (
        select(votes.c.item_id, func.max(votes.c.n).label("top"))
        .group_by(votes.c.item_id)
        .subquery()
    )
    tied = (
        select(votes.c.item_id)
        .join(top, (top.c.item_id == votes.c.item_id) & (top.c.top == votes.c.n))
        .group_by(votes.c.item_id)
        .having(func.count() > 1)
        .subquery()
    )
    return int(db.scalar(select(func.count()).select_from(tied)) or 0)
