"""Issue 15 item 2, fairness, in a real worker process on both setups: one worker, project A
training a long cycle, project B's cycle waiting behind it. A pauses after its slice, B runs
and reaches ``labeling``, then A resumes from where it stopped and ends with exactly the
weights of a twin project that trained the same cycle without a pause."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.loop import wait_cycle
from tests.integration.processes import process, wait_for
from tests.integration.two_projects import cycle_of, project, start
from tests.integration.workers import setup

pytestmark = pytest.mark.slow
SLICE_S = 1
# 40 labelled items, batches of one: ~7 s of training on an idle 2-core machine, minutes at
# load 10; the pause comes after the first epoch past the slice once the other cycle waits.
LONG_EPOCHS = 150


@pytest.mark.parametrize(("db_backend", "broker"), [("postgres", "redis"), ("sqlite", "embedded")])
def test_a_long_cycle_gives_way_and_resumes_to_the_same_weights(
    db_backend: str, broker: str, tmp_path: Path
) -> None:
    with setup(
        db_backend,
        broker,
        tmp_path,
        ANNOLOOP_CYCLE_SLICE_S=str(SLICE_S),
        ANNOLOOP_CYCLE_TURN_WAIT_S="0.5",
    ) as world:
        client, h, log = world.client, world.h, world.log
        long = project(client, h, "long", epochs=LONG_EPOCHS, labelled=40)
        twin = project(client, h, "twin", epochs=LONG_EPOCHS, labelled=40)
        small = project(client, h, "small", epochs=2, labelled=20)
        with process(["worker"], world.env, log):
            first = start(client, h, long)
            wait_for(
                lambda: cycle_of(client, h, long, first)["state"] == "training" or None,
                120,
                "the long cycle to train",
                log,
            )
            other = start(client, h, small)
            asked_at = time.monotonic()
            wait_cycle(client, h, small, other, log, timeout=120)
            small_waited = time.monotonic() - asked_at
            long_then = cycle_of(client, h, long, first)["state"]
            finished = wait_cycle(client, h, long, first, log, timeout=600)
            # The twin trains alone: no one waits, so it never pauses.
            alone = wait_cycle(client, h, twin, start(client, h, twin), log, timeout=600)
    worker_log = log.read_text(errors="replace")
    assert long_then in ("created", "training"), long_then  # B did not wait for A to finish
    # Waited: half a second before a waiting cycle counts, an epoch, B's own short cycle.
    assert small_waited < 60, (small_waited, worker_log[-3000:])
    assert "paused after epoch" in worker_log
    assert finished["metrics"]["pauses"] >= 1, finished["metrics"]
    assert 0 < finished["metrics"]["resumed_at_epoch"] < LONG_EPOCHS
    assert "pauses" not in alone["metrics"]
    assert finished["checkpoint_sha256"] == alone["checkpoint_sha256"]
    assert finished["metrics"]["train_loss"] == alone["metrics"]["train_loss"]
