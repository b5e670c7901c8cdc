"""The start-up check of the hot path's functions, without a database: what it calls a
difference, and a check that could not reach the database is tried again by a request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.core.errors import ServiceUnavailable
from app.fastpath import functions
from app.fastpath.check import FunctionCheck
from tests.aio import run

MD5 = "0" * 32


def _listed() -> list[tuple[str, str, str | None]]:
    """What a database freshly migrated with this code lists."""
    return [(f.signature, MD5, functions.fingerprint(f, MD5)) for f in functions.FUNCTIONS]


def test_the_functions_as_installed_have_no_problem() -> None:
    assert functions.problems(_listed()) == []


def test_each_kind_of_difference_is_named() -> None:
    listed = _listed()
    caller, visible, leased, replay, next_, submit = listed
    other_file = functions.fingerprint(functions.FUNCTIONS[0], MD5)  # caller.sql's stamp
    changed = [
        caller,
        (visible[0], "f" * 32, visible[2]),  # replaced after migrate
        (leased[0], MD5, None),  # never stamped
        (replay[0], MD5, other_file),  # stamped from another file
        submit,  # next is missing
        ("annoloop_old(integer)", MD5, None),
    ]
    assert functions.problems(changed) == [
        f"{visible[0]} was changed after it was installed",
        f"{leased[0]} was not installed from leased.sql",
        f"{replay[0]} was not installed from replay.sql",
        f"{next_[0]} is missing",
        "annoloop_old(integer) is not in app/fastpath/sql",
    ]


class _Pool:
    """Unreachable for the first ``down`` calls, then lists ``rows``."""

    def __init__(self, rows: list[tuple[str, str, str | None]], down: int) -> None:
        self.rows, self.down = rows, down

    async def run(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        if self.down:
            self.down -= 1
            raise ServiceUnavailable("down", code="database_unavailable")
        return self.rows


def test_an_unreachable_database_is_asked_again_and_the_orm_serves_meanwhile() -> None:
    async def scenario() -> list[Any]:
        check = FunctionCheck(_Pool(_listed(), down=1))  # type: ignore[arg-type]
        check.RETRY_S = 0.0
        await check.run()
        states: list[Any] = [check.state, check.serving()]  # unchecked: starts a new check
        assert check._running is not None
        await check._running
        states += [check.state, check.serving()]
        return states

    assert run(scenario()) == ["unchecked", False, "on", True]


def test_functions_that_differ_stay_on_the_orm_without_asking_again() -> None:
    async def scenario() -> tuple[str, bool, bool]:
        pool = _Pool([], down=0)
        check = FunctionCheck(pool)  # type: ignore[arg-type]
        check.RETRY_S = 0.0
        await check.run()
        pool.rows = _listed()  # fixed by a migrate: the API must be restarted to see it
        return check.state, check.serving(), check._running is None

    assert run(scenario()) == ("fallback", False, True)
