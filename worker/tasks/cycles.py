from __future__ import annotations

from typing import Any

from app.core.task_names import ADVANCE, REFRESH, RUN_CYCLE
from worker.celery_app import celery_app


@celery_app.task(name=RUN_CYCLE.name, bind=True, acks_late=True)
def run_cycle(self: Any, cycle_id: int, only_created: bool = False, takeover: bool = False) -> str:
    """Train, evaluate, score and queue for one cycle. Idempotent: re-running a finished
    cycle does nothing, re-running an interrupted one redoes it and writes one queue. A cycle
    begun by another message is left to it unless ``takeover`` (``worker.recovery``); this
    message's own redelivery (same task id) takes over. ``only_created`` is ignored: messages
    queued by older versions carry it, and the rule above now covers what it did."""
    # Imported here so the worker's parent process does not load torch before forking.
    from worker.pipeline.dispatch import run_cycle_of_any_kind
    from worker.pipeline.runtime import runtime

    return run_cycle_of_any_kind(runtime(), cycle_id, self.request.id, takeover)


@celery_app.task(name=ADVANCE.name, acks_late=True)
def advance(project_id: int) -> int | None:
    """After a batch's last label: close the cycle and, with auto-advance, start the next."""
    from app.core.db import unit_of_work
    from app.core.tasks import CelerySender, bind_sender
    from app.cycles.service import complete_if_labelled
    from worker.pipeline.runtime import runtime

    with unit_of_work(runtime().factory) as db:
        bind_sender(db, CelerySender(celery_app))
        started = complete_if_labelled(db, project_id)
        return started.id if started else None


@celery_app.task(name=REFRESH.name, acks_late=True)
def refresh(project_id: int) -> int | None:
    """Cleaning: every b labels, start a cycle that fine-tunes and re-ranks (if none runs)."""
    from app.core.db import unit_of_work
    from app.core.tasks import CelerySender, bind_sender
    from app.cycles.service import refresh_cleaning
    from worker.pipeline.runtime import runtime

    with unit_of_work(runtime().factory) as db:
        bind_sender(db, CelerySender(celery_app))
        started = refresh_cleaning(db, project_id)
        return started.id if started else None
