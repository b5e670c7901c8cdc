"""The cycle state machine's table (``app.cycles.states``) itself."""

from __future__ import annotations

from collections import deque

import pytest

from app.core.enums import CycleState
from app.cycles.states import RUNNING, TERMINAL, TRANSITIONS, IllegalTransition, _checked_sources

S = CycleState


def _reachable(start: CycleState) -> set[CycleState]:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_has_a_row_and_names_only_states() -> None:
    assert set(TRANSITIONS) == set(CycleState)
    assert all(set(nxt) <= set(CycleState) for nxt in TRANSITIONS.values())


def test_every_state_is_reachable_from_created() -> None:
    assert _reachable(S.created) == set(CycleState)


def test_terminal_states_have_no_exits_and_are_completed_and_cancelled() -> None:
    assert {S.completed, S.cancelled} == TERMINAL
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_every_state_can_still_end() -> None:
    # No state is a trap: from each one some terminal state is reachable.
    assert all(_reachable(s) & TERMINAL for s in CycleState)


def test_running_states_can_fail_and_be_cancelled_and_only_they_fail() -> None:
    assert {s for s in CycleState if S.failed in TRANSITIONS[s]} == set(RUNNING)
    assert {s for s in CycleState if S.cancelled in TRANSITIONS[s]} == {*RUNNING, S.labeling}


def test_a_labelled_batch_completes_and_nothing_goes_back_to_labeling() -> None:
    assert {s for s in CycleState if S.labeling in TRANSITIONS[s]} == {S.scoring}
    assert {s for s in CycleState if S.completed in TRANSITIONS[s]} == {S.labeling}


def test_a_guard_naming_a_move_the_table_forbids_is_refused_before_any_sql() -> None:
    with pytest.raises(IllegalTransition, match="completed may not move to training"):
        _checked_sources(S.training, [S.created, S.completed])
    with pytest.raises(IllegalTransition):
        _checked_sources(S.training, [])
    assert _checked_sources(S.created, None) == (S.created, S.training, S.failed)
