"""``GET /projects/{id}/next`` on the hot path: one call of ``annoloop_next``
(``app/fastpath/sql/next.sql``), which applies the rules of ``app.queue.service.next_item``
in the database."""

from __future__ import annotations

from app.core.db import utcnow
from app.fastpath.caller import Gate
from app.fastpath.pool import HotPool, Tx
from app.queue.schemas import NextOut
from app.queue.service import with_ahead

_NEXT = """
    SELECT annoloop_next(
        %(token_hash)s::text, %(project_id)s::integer, %(now)s::timestamptz,
        %(lease_seconds)s::integer, %(want)s::integer) AS answer
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
    params = {
        "token_hash": gate.token_hash(token),
        "project_id": project_id,
        "now": utcnow(),
        "lease_seconds": lease_seconds,
        "want": 1 + ahead,
    }

    async def work(tx: Tx) -> NextOut:
        row = await gate.call(tx, _NEXT, params, client)
        answer = row.answer
        if "leases" not in answer:
            return NextOut.model_validate(answer)  # queue_empty or budget_spent
        return with_ahead([NextOut.model_validate(x) for x in answer["leases"]], None)

    return await pool.run(work)
