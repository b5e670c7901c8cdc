"""``GET /projects/{id}/next`` on the hot path: the rules of ``app.queue.service.next_item``
in four round trips (caller and project, the sweep, the held leases, the pick that inserts
its lease), plus the commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.db import utcnow
from app.core.enums import CycleState
from app.fastpath.caller import CALLER_AND_PROJECT, Gate, ProjectView, visible_project
from app.fastpath.pool import HotPool, Tx
from app.items.schemas import ItemOut
from app.queue.schemas import LeaseOut, NextOut
from app.queue.service import with_ahead

_ITEM_COLUMNS = """
    i.id AS item_id, i.project_id, i.split, i.external_id, i.blob_sha256, i.media_type,
    i.width, i.height, i.meta, i.created_at AS item_created_at
"""
# Claimed with SKIP LOCKED in id order, as ``app.queue.repository.expire_stale``: sweeps never
# wait on each other, and a lease being submitted (locked) is left alone.
_STALE = """
    SELECT id, queue_entry_id FROM lease
    WHERE released_at IS NULL AND expires_at <= %(now)s
    ORDER BY id FOR UPDATE SKIP LOCKED
"""
_EXPIRE = """
    UPDATE lease SET released_at = %(now)s, outcome = 'expired' WHERE id = ANY(%(ids)s)
"""
_GIVE_BACK = "UPDATE queue_entry SET leases_open = leases_open - %(n)s WHERE id = %(entry_id)s"
_HELD = f"""
    SELECT l.id, l.queue_entry_id, l.created_at, l.expires_at, q.cycle_id, {_ITEM_COLUMNS}
    FROM lease l JOIN queue_entry q ON q.id = l.queue_entry_id JOIN item i ON i.id = l.item_id
    WHERE l.project_id = %(project_id)s AND l.annotator_id = %(annotator_id)s
      AND l.released_at IS NULL AND l.expires_at > %(now)s
    ORDER BY l.id LIMIT %(limit)s
"""
_OPEN_LEASES = """
    SELECT count(*) AS n FROM lease WHERE project_id = %(project_id)s AND released_at IS NULL
"""
# The pick of ``app.queue.repository.pick_entry`` (the best-ranked open entry of a labelling
# cycle with a free slot, that this annotator has neither labelled nor skipped nor holds),
# locked with SKIP LOCKED, then the lease on it and its count, in one statement.
_PICK_AND_LEASE = f"""
    WITH picked AS (
        SELECT q.id AS entry_id, q.cycle_id, q.item_id
        FROM queue_entry q
        WHERE q.project_id = %(project_id)s AND q.state = 'open'
          AND q.labels_received + q.leases_open < q.labels_wanted
          AND EXISTS (SELECT 1 FROM cycle c WHERE c.id = q.cycle_id AND c.state = 'labeling')
          AND NOT EXISTS (
              SELECT 1 FROM annotation an
              WHERE an.item_id = q.item_id AND an.annotator_id = %(annotator_id)s
                AND an.retracted_at IS NULL)
          AND NOT EXISTS (
              SELECT 1 FROM lease s
              WHERE s.queue_entry_id = q.id AND s.annotator_id = %(annotator_id)s
                AND (s.released_at IS NULL OR s.outcome = 'skipped'))
        ORDER BY q.rank, q.id LIMIT 1
        FOR UPDATE OF q SKIP LOCKED
    ), leased AS (
        INSERT INTO lease (project_id, queue_entry_id, item_id, annotator_id, created_at,
                           expires_at)
        SELECT %(project_id)s, entry_id, item_id, %(annotator_id)s, %(now)s, %(expires_at)s
        FROM picked
        RETURNING id, queue_entry_id, item_id, created_at, expires_at
    ), counted AS (
        UPDATE queue_entry SET leases_open = leases_open + 1
        FROM picked WHERE queue_entry.id = picked.entry_id
    )
    SELECT l.id, l.queue_entry_id, l.created_at, l.expires_at, p.cycle_id, {_ITEM_COLUMNS}
    FROM leased l JOIN picked p ON true JOIN item i ON i.id = l.item_id
"""
_LATEST_CYCLE = """
    SELECT id, state FROM cycle WHERE project_id = %(project_id)s ORDER BY number DESC LIMIT 1
"""


async def next_item(
    pool: HotPool,
    gate: Gate,
    token: str,
    client: str,
    project_id: int,
    lease_seconds: int,
    ahead: int,
) -> NextOut:
    await gate.before(client)
    token_hash = gate.token_hash(token)

    async def work(tx: Tx) -> NextOut:
        row = await tx.one(CALLER_AND_PROJECT, {"token_hash": token_hash, "project_id": project_id})
        annotator_id = await gate.check(row, client)
        project = visible_project(row, project_id)
        now = utcnow()
        await _expire_stale(tx, now)
        held = await tx.all(
            _HELD,
            {
                "project_id": project.id,
                "annotator_id": annotator_id,
                "now": now,
                "limit": 1 + ahead,
            },
        )
        leased = [_leased(r) for r in held]
        refusal: NextOut | None = None
        while len(leased) < 1 + ahead:
            got = await _lease_another(tx, annotator_id, project, lease_seconds)
            if got.status != "leased":
                refusal = got
                break
            leased.append(got)
        return with_ahead(leased, refusal)

    return await pool.run(work)


async def _expire_stale(tx: Tx, now: datetime) -> None:
    stale = await tx.all(_STALE, {"now": now})
    if not stale:
        return
    await tx.execute(_EXPIRE, {"now": now, "ids": [r.id for r in stale]})
    per_entry: dict[int, int] = {}
    for r in stale:
        per_entry[r.queue_entry_id] = per_entry.get(r.queue_entry_id, 0) + 1
    for entry_id, n in sorted(per_entry.items()):  # id order: sweeps cannot deadlock
        await tx.execute(_GIVE_BACK, {"n": n, "entry_id": entry_id})


async def _lease_another(
    tx: Tx, annotator_id: int, project: ProjectView, lease_seconds: int
) -> NextOut:
    if project.budget is not None:
        open_row = await tx.one(_OPEN_LEASES, {"project_id": project.id})
        assert open_row is not None
        if project.labels_spent + int(open_row.n) >= project.budget:
            return NextOut(status="budget_spent")
    now = utcnow()
    row = await tx.one(
        _PICK_AND_LEASE,
        {
            "project_id": project.id,
            "annotator_id": annotator_id,
            "now": now,
            "expires_at": now + timedelta(seconds=lease_seconds),
        },
    )
    if row is not None:
        return _leased(row)
    cycle = await tx.one(_LATEST_CYCLE, {"project_id": project.id})
    return NextOut(
        status="queue_empty",
        cycle_id=cycle.id if cycle else None,
        cycle_state=cycle.state if cycle else None,
    )


def _leased(row: Any) -> NextOut:
    return NextOut(
        status="leased",
        lease=LeaseOut(
            id=row.id,
            item_id=row.item_id,
            queue_entry_id=row.queue_entry_id,
            expires_at=_utc(row.expires_at),
            created_at=_utc(row.created_at),
        ),
        item=item_out(row),
        cycle_id=row.cycle_id,
        cycle_state=CycleState.labeling.value,
    )


def item_out(row: Any) -> ItemOut:
    return ItemOut(
        id=row.item_id,
        project_id=row.project_id,
        split=row.split,
        external_id=row.external_id,
        blob_sha256=row.blob_sha256,
        media_type=row.media_type,
        width=row.width,
        height=row.height,
        meta=row.meta,
        created_at=_utc(row.item_created_at),
    )


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
