"""Issue 15 item 2, in a real worker process on both setups: a cycle cancelled while it trains
frees the worker within seconds (another project's cycle, queued behind it, then runs), and a
cycle past ``ANNOLOOP_CYCLE_TIME_LIMIT_S`` fails with an error saying so."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.loop import wait_cycle
from tests.integration.processes import process, wait_for
from tests.integration.two_projects import cycle_of, in_state, project, start
from tests.integration.workers import setup

pytestmark = pytest.mark.slow
LIMIT_S = 15
FREED_WITHIN_S = 10  # cancel → the next cycle claimed: one check interval, a batch, the broker


@pytest.mark.parametrize(("db_backend", "broker"), [("postgres", "redis"), ("sqlite", "embedded")])
def test_cancel_frees_the_worker_and_the_time_limit_fails_a_cycle(
    db_backend: str, broker: str, tmp_path: Path
) -> None:
    with setup(db_backend, broker, tmp_path, ANNOLOOP_CYCLE_TIME_LIMIT_S=str(LIMIT_S)) as world:
        client, h, log = world.client, world.h, world.log
        # 200 labelled items x 1000 epochs, one item a step: minutes of training.
        huge = project(client, h, "huge", epochs=1000, labelled=200)
        small = project(client, h, "small", epochs=2, labelled=20)
        with process(["worker"], world.env, log):
            first = start(client, h, huge)
            wait_for(
                lambda: cycle_of(client, h, huge, first)["state"] == "training" or None,
                120,
                "the huge cycle to train",
                log,
            )
            time.sleep(2)  # well inside the training loop
            other = start(client, h, small)
            time.sleep(2)
            assert cycle_of(client, h, small, other)["state"] == "created"  # waits its turn

            r = client.post(f"/api/v1/projects/{huge}/cycles/{first}/cancel", headers=h)
            assert r.json()["state"] == "cancelled", r.text
            cancelled_at = time.monotonic()
            wait_for(
                lambda: cycle_of(client, h, small, other)["state"] != "created" or None,
                60,
                "the other project's cycle to start",
                log,
            )
            freed_after = time.monotonic() - cancelled_at
            wait_cycle(client, h, small, other, log, timeout=120)

            overdue = start(client, h, huge)
            failed = wait_for(
                lambda: in_state(client, h, huge, overdue, "failed"),
                LIMIT_S + 120,
                "the overdue cycle to fail",
                log,
            )
        cancelled = cycle_of(client, h, huge, first)
    worker_log = log.read_text(errors="replace")
    assert freed_after < FREED_WITHIN_S, (freed_after, worker_log[-3000:])
    assert (cancelled["state"], cancelled["error"]) == ("cancelled", None)
    assert "cancelled while training" in worker_log  # the task's outcome, not a failure
    assert "time limit of 15 s" in failed["error"], failed["error"]
    assert "ANNOLOOP_CYCLE_TIME_LIMIT_S" in failed["error"]
    ran = _seconds(failed["finished_at"]) - _seconds(failed["started_at"])
    assert LIMIT_S <= ran < LIMIT_S + FREED_WITHIN_S, ran


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()
