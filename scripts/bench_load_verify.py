"""After the load: the client-side log of acknowledged labels against the database.

Every acknowledged label must be stored exactly once, no item may hold more labels than its
queue entry wanted, and no queue entry may have been leased to more annotators at once than
it wanted (1 in the benchmark), by the lease rows and by the clients' own timeline.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from app.annotations.models import Annotation
from app.core.db import make_engine, make_session_factory
from app.queue.models import Lease, QueueEntry


@dataclass(frozen=True)
class Ack:
    """One label the API acknowledged (200/201), as the client saw it."""

    annotation_id: int
    item_id: int
    annotator_id: int
    leased_at: float  # client clock: when `next` answered
    acked_at: float  # client clock: when the submit answered


def _max_concurrent(intervals: list[tuple[datetime, datetime]]) -> int:
    events = [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
    top = current = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # a close before an open
        current += delta
        top = max(top, current)
    return top


def _client_overlaps(acks: list[Ack]) -> int:
    """Items that two clients held at the same time (lease answered → label acknowledged)."""
    by_item: dict[int, list[Ack]] = defaultdict(list)
    for a in acks:
        by_item[a.item_id].append(a)
    bad = 0
    for held in by_item.values():
        held.sort(key=lambda a: a.leased_at)
        bad += any(b.leased_at < a.acked_at for a, b in itertools.pairwise(held))
    return bad


def verify(db_url: str, project_id: int, acks: list[Ack]) -> dict[str, int]:
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as db:
            stored = db.execute(
                select(Annotation.id, Annotation.item_id, Annotation.annotator_id).where(
                    Annotation.project_id == project_id, Annotation.retracted_at.is_(None)
                )
            ).all()
            wanted = dict(
                db.execute(
                    select(QueueEntry.item_id, QueueEntry.labels_wanted).where(
                        QueueEntry.project_id == project_id
                    )
                ).all()
            )
            leases: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
            for lease in db.scalars(select(Lease).where(Lease.project_id == project_id)):
                leases[lease.queue_entry_id].append(
                    (lease.created_at, lease.released_at or lease.expires_at)
                )
    finally:
        engine.dispose()
    stored_ids = {row.id for row in stored}
    acked_ids = [a.annotation_id for a in acks]
    per_pair = Counter((row.item_id, row.annotator_id) for row in stored)
    per_item = Counter(row.item_id for row in stored)
    return {
        "acknowledged": len(acks),
        "stored": len(stored),
        "lost": len(set(acked_ids) - stored_ids),
        "acked_twice": len(acked_ids) - len(set(acked_ids)),
        "stored_unacknowledged": len(stored_ids - set(acked_ids)),
        "same_annotator_twice": sum(n > 1 for n in per_pair.values()),
        "items_over_wanted": sum(n > wanted.get(item, 1) for item, n in per_item.items()),
        "db_leases_overlapping": sum(
            _max_concurrent(spans) > 1 for spans in leases.values()
        ),  # every entry wants 1 label in the benchmark
        "client_leases_overlapping": _client_overlaps(acks),
    }


DUPLICATE_KEYS = (
    "acked_twice",
    "same_annotator_twice",
    "items_over_wanted",
    "db_leases_overlapping",
    "client_leases_overlapping",
)
