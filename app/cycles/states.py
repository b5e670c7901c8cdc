"""The cycle state machine: which state may follow which, and the one way to change a state.

Every writer of ``cycles.state`` (the API's cancel and retry, the worker's claim, advance,
queue opening and failure, the completion of a labelled batch) goes through ``transition``:
an ``UPDATE ... WHERE state IN (sources)`` whose row count says whether it won. A redelivered
task, a cancel from the API and a worker that finishes late race on the same row; the guard
makes exactly one of them win and the others stop without side effects, on both databases,
with no read-modify-write of a row someone else may be changing.

::

    created ──► training ──► scoring ──► labeling ──► completed
       │  ▲        │  ▲         │           │
       │  │        ▼  │(claim)  ▼           ▼
       │  └──── failed ◄────────┘       cancelled
       └──────────► cancelled ◄─ training, scoring

``failed`` is not terminal (retry sends it back to ``created``); ``completed`` and
``cancelled`` are. A training cycle that pauses for another project's waiting cycle
(``worker.pipeline.fair_share``) goes back to ``created`` too, and is claimed again later.

The claim (``worker.pipeline.transitions.claim``) records which task message took the cycle
(``claimed_by``, Celery's task id). Any message claims a ``created`` cycle; the claim that
re-enters ``training`` from ``training`` or ``scoring`` is allowed only to the redelivery of
that message (same id: its worker died before the ack) or to an explicit takeover
(``worker.recovery``). So a retry sent twice, or the sweep's re-send, never trains a cycle
beside the worker already training it, and a message whose worker died is not left behind by
its own redelivery.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from app.core.enums import CycleState
from app.core.errors import Conflict
from app.cycles.models import Cycle

S = CycleState

# The states whose work is still to do or being done: at most one per project (a new cycle
# is refused while one is here), and the ones a worker may claim, fail or be cancelled in.
RUNNING: tuple[CycleState, ...] = (S.created, S.training, S.scoring)

# state -> the states it may move to. A claim re-enters ``training`` from ``training`` or
# ``scoring`` (the claiming message, redelivered, takes over the run its worker left); a
# retry re-sends a ``created`` cycle whose task never reached the broker (a second copy, if
# the first did reach it, finds the cycle claimed by the first and stops).
TRANSITIONS: Mapping[CycleState, frozenset[CycleState]] = {
    S.created: frozenset({S.created, S.training, S.failed, S.cancelled}),
    S.training: frozenset({S.created, S.training, S.scoring, S.failed, S.cancelled}),
    S.scoring: frozenset({S.training, S.labeling, S.failed, S.cancelled}),
    S.labeling: frozenset({S.completed, S.cancelled}),
    S.failed: frozenset({S.created}),
    S.completed: frozenset(),
    S.cancelled: frozenset(),
}

TERMINAL: frozenset[CycleState] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class IllegalTransition(ValueError):
    """Code asked for a move the table does not allow (a programming error, not a race)."""


def sources(to: CycleState) -> tuple[CycleState, ...]:
    """Every state that may move to ``to``, in the enum's order."""
    return tuple(s for s in CycleState if to in TRANSITIONS[s])


def allowed(frm: CycleState, to: CycleState) -> bool:
    return to in TRANSITIONS[frm]


def _checked_sources(to: CycleState, expect: Iterable[CycleState] | None) -> tuple[CycleState, ...]:
    if expect is None:
        return sources(to)
    expected = tuple(expect)
    bad = [s.value for s in expected if not allowed(s, to)]
    if bad or not expected:
        raise IllegalTransition(f"{', '.join(bad) or 'nothing'} may not move to {to.value}")
    return expected


def transition(
    db: Session,
    cycle_ids: int | Collection[int],
    to: CycleState,
    *,
    expect: CycleState | Iterable[CycleState] | None = None,
    attempt: int | None = None,
    guard: ColumnElement[bool] | None = None,
    **values: Any,
) -> int:
    """Compare-and-set: move the cycle(s) to ``to`` if their state is one of ``expect``
    (default: every state the table allows to reach ``to``), with ``attempt`` the cycle
    still runs that attempt, and ``guard`` (a further condition on the row) holds; also set
    ``values``. Returns how many rows moved (0: the guard did not hold, someone else changed
    the state first).

    Objects of these cycles already loaded in ``db`` are not updated (the guard may have
    failed against a state they do not show): refresh them to read the outcome."""
    if isinstance(expect, CycleState):
        expect = (expect,)
    states = _checked_sources(to, expect)
    ids = [cycle_ids] if isinstance(cycle_ids, int) else list(cycle_ids)
    if not ids:
        return 0
    query = update(Cycle).where(Cycle.id.in_(ids), Cycle.state.in_(states))
    if attempt is not None:
        query = query.where(Cycle.attempts == attempt)
    if guard is not None:
        query = query.where(guard)
    result = db.execute(
        query.values(state=to, **values).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def transition_or_409(
    db: Session, cycle: Cycle, to: CycleState, *, action: str, **values: Any
) -> Cycle:
    """``transition`` for a request: the cycle, refreshed, in state ``to``; or a 409
    ``illegal_transition`` naming the state it is in (read after the refused update, so it
    is the state that refused it) and changing nothing."""
    moved = transition(db, cycle.id, to, **values)
    db.refresh(cycle)
    if not moved:
        raise Conflict(
            f"cannot {action} a cycle that is {cycle.state.value}",
            code="illegal_transition",
            detail={"state": cycle.state.value, "to": to.value},
        )
    return cycle
