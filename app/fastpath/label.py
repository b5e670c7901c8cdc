"""``POST /items/{id}/annotations`` on the hot path: the rules of
``app.annotations.service.submit`` in five round trips (caller and item, own labels, the
lease closed with the label counted and stored, the budget, whether the cycle is done),
plus the commit. Statement order is the lock order of the sync path: lease, queue entry,
project; the project row (the budget counter) is held from its update to the commit only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC
from typing import Any, NoReturn

import anyio
import psycopg

from app.annotations.schemas import AnnotationCreate, AnnotationOut
from app.annotations.votes import summarise
from app.core.db import utcnow
from app.core.enums import LabelSource, LeaseOutcome, ProjectKind, QueueState, Split
from app.core.errors import Conflict, NotFound, TooManyRequests, Unprocessable
from app.core.ratelimit import AsyncRateLimiter
from app.core.tasks import TaskSender
from app.cycles.service import ADVANCE_TASK, REFRESH_TASK
from app.fastpath.caller import CALLER_AND_ITEM, Gate, ProjectView, visible_project
from app.fastpath.pool import HotPool, Tx

log = logging.getLogger(__name__)

_ANNOTATION_COLUMNS = """
    id, item_id, project_id, annotator_id, class_index, source, cycle_id, idempotency_key,
    created_at, retracted_at
"""
_OWN_LABELS = f"""
    SELECT {_ANNOTATION_COLUMNS} FROM annotation
    WHERE annotator_id = %(annotator_id)s
      AND ((item_id = %(item_id)s AND source = 'human' AND retracted_at IS NULL)
           OR idempotency_key = %(key)s)
"""
# The caller's live lease closed, the label counted on its queue entry (``done`` once it has
# the labels it wants) and stored: ``app.queue.service.take_lease`` / ``record_label``.
_LABEL = f"""
    WITH closed AS (
        UPDATE lease SET released_at = %(now)s, outcome = 'labelled'
        WHERE item_id = %(item_id)s AND annotator_id = %(annotator_id)s
          AND released_at IS NULL AND expires_at > %(now)s
        RETURNING queue_entry_id
    ), counted AS (
        UPDATE queue_entry q SET
            leases_open = q.leases_open - 1,
            labels_received = q.labels_received + 1,
            state = CASE WHEN q.labels_received + 1 >= q.labels_wanted THEN 'done'
                         ELSE q.state END
        FROM closed WHERE q.id = closed.queue_entry_id
        RETURNING q.id, q.cycle_id, q.state
    ), stored AS (
        INSERT INTO annotation (item_id, project_id, annotator_id, class_index, source,
                                cycle_id, idempotency_key, created_at)
        SELECT %(item_id)s, %(project_id)s, %(annotator_id)s, %(class_index)s, 'human',
               counted.cycle_id, %(key)s, %(now)s
        FROM counted
        RETURNING {_ANNOTATION_COLUMNS}
    )
    SELECT counted.id AS entry_id, counted.state AS entry_state, stored.*
    FROM counted JOIN stored ON true
"""
_LAST_LEASE = """
    SELECT outcome, released_at, expires_at FROM lease
    WHERE item_id = %(item_id)s AND annotator_id = %(annotator_id)s
    ORDER BY id DESC LIMIT 1
"""
_LIVE_VOTES = """
    SELECT class_index FROM annotation WHERE item_id = %(item_id)s AND retracted_at IS NULL
"""
_WANT_ANOTHER = """
    UPDATE queue_entry SET labels_wanted = labels_received + 1, state = 'open'
    WHERE id = %(entry_id)s
"""
_SPEND = """
    UPDATE project SET labels_spent = labels_spent + 1, updated_at = %(now)s
    WHERE id = %(project_id)s
      AND (%(budget)s::integer IS NULL OR labels_spent + 1 <= %(budget)s::integer)
    RETURNING labels_spent
"""
# After the project row is locked (the update above): a concurrent submit that finished the
# cycle's other last entry has committed by then, so one of the two sees no open entry.
_HAS_OPEN_ENTRY = """
    SELECT 1 AS one FROM queue_entry
    WHERE project_id = %(project_id)s AND state = 'open' AND cycle_id = %(cycle_id)s LIMIT 1
"""


@dataclass(frozen=True)
class Submitted:
    annotation: AnnotationOut
    replayed: bool
    tasks: tuple[tuple[str, list[Any], str], ...] = ()


async def submit(
    pool: HotPool,
    gate: Gate,
    limits: LabelLimit,
    token: str,
    client: str,
    item_id: int,
    body: AnnotationCreate,
) -> Submitted:
    await gate.before(client)
    token_hash = gate.token_hash(token)

    async def work(tx: Tx) -> Submitted:
        row = await tx.one(CALLER_AND_ITEM, {"token_hash": token_hash, "item_id": item_id})
        annotator_id = await gate.check(row, client)
        await limits.check(annotator_id)
        assert row is not None
        if row.item_id is None:
            raise NotFound(f"item {item_id} not found")
        project = visible_project(row, row.item_project_id)
        return await _submit(tx, annotator_id, project, row, body)

    return await pool.run(work)


async def _submit(
    tx: Tx, annotator_id: int, project: ProjectView, item: Any, body: AnnotationCreate
) -> Submitted:
    if not 0 <= body.class_index < project.num_classes:
        raise Unprocessable(
            f"class_index {body.class_index} is out of range: this project has "
            f"{project.num_classes} classes (0–{project.num_classes - 1})",
            code="wrong_class",
        )
    ids = {"annotator_id": annotator_id, "item_id": item.item_id}
    mine = await tx.all(_OWN_LABELS, {**ids, "key": body.idempotency_key})
    earlier = next((a for a in mine if a.idempotency_key == body.idempotency_key), None)
    if body.idempotency_key is not None and earlier is not None:
        if earlier.item_id != item.item_id or earlier.class_index != body.class_index:
            raise Conflict(
                "this idempotency key was already used for a different label",
                code="idempotency_key_reused",
            )
        return Submitted(_annotation_out(earlier), replayed=True)
    if item.split == Split.test.value:
        raise Conflict("test items are labelled by import, not in the queue", code="test_item")
    if any(a.item_id == item.item_id and _live_human(a) for a in mine):
        raise Conflict(f"you already labelled item {item.item_id}", code="already_labelled")
    now = utcnow()
    try:
        stored = await tx.one(
            _LABEL,
            {
                **ids,
                "now": now,
                "project_id": project.id,
                "class_index": body.class_index,
                "key": body.idempotency_key,
            },
        )
    except psycopg.errors.UniqueViolation as exc:  # a concurrent request won the same slot
        raise Conflict(
            f"you already labelled item {item.item_id}", code="already_labelled"
        ) from exc
    if stored is None:
        await _no_lease(tx, ids, now)
    entry_done = stored.entry_state == QueueState.done.value
    if project.kind is ProjectKind.clean:
        entry_done = await _settle(tx, project, item.item_id, stored.entry_id, entry_done)
    spent = await tx.one(_SPEND, {"project_id": project.id, "budget": project.budget, "now": now})
    if spent is None:
        raise Conflict("the project's label budget is spent", code="budget_spent")
    tasks: tuple[tuple[str, list[Any], str], ...] = ()
    if entry_done and not await tx.one(
        _HAS_OPEN_ENTRY, {"project_id": project.id, "cycle_id": stored.cycle_id}
    ):
        tasks = ((ADVANCE_TASK, [project.id], "default"),)
    elif project.finetune_every and spent.labels_spent % project.finetune_every == 0:
        tasks = ((REFRESH_TASK, [project.id], "default"),)
    return Submitted(_annotation_out(stored), replayed=False, tasks=tasks)


async def _no_lease(tx: Tx, ids: dict[str, int], now: Any) -> NoReturn:
    """409: why the caller holds no live lease on the item."""
    earlier = await tx.one(_LAST_LEASE, ids)
    if earlier is not None and (
        earlier.outcome == LeaseOutcome.expired.value
        or (earlier.released_at is None and earlier.expires_at <= now)
    ):
        raise Conflict(
            "your lease on this item expired; ask for the next item", code="lease_expired"
        )
    raise Conflict(f"item {ids['item_id']} is not leased to you", code="not_leased")


async def _settle(
    tx: Tx, project: ProjectView, item_id: int, entry_id: int, entry_done: bool
) -> bool:
    """Cleaning: the entry stays open, one more label at a time, until the item's votes
    have a strict majority (``app.queue.service.settle``)."""
    votes = [r.class_index for r in await tx.all(_LIVE_VOTES, {"item_id": item_id})]
    if summarise(votes, project.num_classes).majority is not None:
        return entry_done
    await tx.execute(_WANT_ANOTHER, {"entry_id": entry_id})
    return False


class LabelLimit:
    """Label submissions per annotator per minute (``app.deps.limit_label_rate``)."""

    def __init__(self, limiter: AsyncRateLimiter, limit: int) -> None:
        self.limiter, self.limit = limiter, limit

    async def check(self, annotator_id: int) -> None:
        if self.limit and await self.limiter.hit(f"labels:{annotator_id}") > self.limit:
            raise TooManyRequests(
                f"more than {self.limit} label submissions a minute",
                retry_after=self.limiter.retry_after(),
            )


async def send_tasks(sender: TaskSender, tasks: tuple[tuple[str, list[Any], str], ...]) -> None:
    """After the commit, as ``app.core.tasks.send_after_commit``: the broker client blocks,
    so it runs in a thread; a failure is logged (the tasks can be re-sent)."""
    for name, args, queue in tasks:
        try:
            await anyio.to_thread.run_sync(sender.send, name, args, queue)
        except Exception:
            log.exception("could not send task %s%s to queue %s", name, tuple(args), queue)


def _live_human(row: Any) -> bool:
    return bool(row.source == LabelSource.human.value and row.retracted_at is None)


def _annotation_out(row: Any) -> AnnotationOut:
    return AnnotationOut(
        id=row.id,
        item_id=row.item_id,
        project_id=row.project_id,
        annotator_id=row.annotator_id,
        class_index=row.class_index,
        source=LabelSource(row.source),
        cycle_id=row.cycle_id,
        idempotency_key=row.idempotency_key,
        created_at=row.created_at.astimezone(UTC),
        retracted_at=row.retracted_at.astimezone(UTC) if row.retracted_at else None,
    )
