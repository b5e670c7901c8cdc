"""``POST /items/{id}/annotations`` on the hot path: one call of ``annoloop_submit``
(``app/fastpath/sql/submit.sql``), which applies the rules of
``app.annotations.service.submit`` in the database; the tasks it asks for are sent after it
has committed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio
import psycopg

from app.annotations.schemas import AnnotationCreate, AnnotationOut
from app.core.db import utcnow
from app.core.errors import Conflict, TooManyRequests
from app.core.ratelimit import AsyncRateLimiter
from app.core.task_names import ADVANCE, REFRESH
from app.core.tasks import TaskSender
from app.fastpath.caller import Gate
from app.fastpath.pool import HotPool, Tx
from app.observability.metrics import record_label

log = logging.getLogger(__name__)

_SUBMIT = """
    SELECT annoloop_submit(
        %(token_hash)s::text, %(item_id)s::integer, %(class_index)s::numeric, %(key)s::text,
        %(now)s::timestamptz) AS answer
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
    token_hash = gate.token_hash(token)
    params = {
        "token_hash": token_hash,
        "item_id": item_id,
        "class_index": body.class_index,
        "key": body.idempotency_key,
        "now": utcnow(),
    }

    async def work(tx: Tx) -> Submitted:
        if limits.limit:
            # The limit is per annotator and comes before the label is stored: who owns
            # the token is asked first (the function still checks the token itself).
            await limits.check(await gate.owner(tx, token_hash, client))
        try:
            row = await gate.call(tx, _SUBMIT, params, client)
        except psycopg.errors.UniqueViolation as exc:  # a concurrent request won the slot
            raise Conflict(f"you already labelled item {item_id}", code="already_labelled") from exc
        answer = row.answer
        tasks: tuple[tuple[str, list[Any], str], ...] = ()
        out = AnnotationOut.model_validate(answer["annotation"])
        if answer.get("advance"):
            tasks = (ADVANCE.message([out.project_id]),)
        elif answer.get("refresh"):
            tasks = (REFRESH.message([out.project_id]),)
        return Submitted(out, replayed=bool(answer["replayed"]), tasks=tasks)

    done = await pool.run(work)
    if not done.replayed:
        _record(done.annotation)
    return done


def _record(label: AnnotationOut) -> None:
    """The metric and log line ``app.observability.label_events`` writes for ORM commits
    (no ORM here): after the commit, never failing the request."""
    try:
        record_label(
            label.project_id,
            str(label.source),
            annotation_id=label.id,
            item_id=label.item_id,
            annotator_id=label.annotator_id,
            cycle_id=label.cycle_id,
            idempotency_key=label.idempotency_key,
        )
    except Exception:
        log.exception("could not record label %s", label.id)


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
