"""Re-sending cycles and pretraining runs that lost their task message.

Redis gives an unacknowledged message back after the visibility timeout, so a worker killed
mid-task is covered by the broker. The embedded SQLite transport has no such timeout: a
message taken by a worker that then died stays invisible. So when a worker on the embedded
broker starts, cycles still marked running have no live task (the embedded setup runs one
worker) and are sent again, as explicit takeovers (a new message may otherwise not take over a
run another message began); the run task is idempotent and guarded by compare-and-set
transitions, so a duplicate would only redo work, never write twice.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from app.core.config import get_settings
from app.core.enums import CycleState, PretrainingStatus
from app.core.task_names import PRETRAIN, RUN_CYCLE
from app.cycles.models import Cycle
from app.pretraining.models import Pretraining

log = logging.getLogger(__name__)
# No worker holds what was left running: the new message may take it over.
TAKEOVER = {"takeover": True}


def resend_orphaned_cycles(sender: Any = None, **_: Any) -> list[int]:
    settings = get_settings()
    if not settings.broker_url.startswith("sqla+"):
        return []
    from worker.pipeline.runtime import runtime

    with runtime().factory() as db:
        orphaned = list(
            db.scalars(
                select(Cycle.id).where(
                    Cycle.state.in_([CycleState.created, CycleState.training, CycleState.scoring])
                )
            )
        )
        # A pretraining run left running resumes from its last epoch's checkpoint.
        runs = list(
            db.scalars(
                select(Pretraining.id).where(
                    Pretraining.status.in_([PretrainingStatus.queued, PretrainingStatus.running])
                )
            )
        )
    app = sender.app if sender is not None else None
    for cycle_id in orphaned:
        log.warning("re-sending cycle %s, left running by a stopped worker", cycle_id)
        if app is not None:
            app.send_task(RUN_CYCLE.name, args=[cycle_id], kwargs=TAKEOVER, queue=RUN_CYCLE.queue)
    for run_id in runs:
        log.warning("re-sending pretraining run %s, left by a stopped worker", run_id)
        if app is not None:
            app.send_task(PRETRAIN.name, args=[run_id], kwargs=TAKEOVER, queue=PRETRAIN.queue)
    return orphaned
