"""Ensemble members as separate tasks (see ``worker.pipeline.ensemble``): thin, take ids."""

from __future__ import annotations

from typing import Any

from app.core.task_names import ENSEMBLE_JOIN, ENSEMBLE_MEMBER
from worker.celery_app import celery_app


@celery_app.task(name=ENSEMBLE_MEMBER.name, bind=True, acks_late=True)
def train_member(self: Any, cycle_id: int, attempt: int, member: int) -> str:
    """Train ensemble member ``member`` and record its checkpoint. Idempotent; a task of an
    attempt the cycle has moved past does nothing."""
    # Imported here so the worker's parent process does not load torch before forking.
    from app.core.tasks import CelerySender
    from worker.pipeline.ensemble import run_member
    from worker.pipeline.runtime import runtime

    return run_member(
        runtime(),
        cycle_id,
        attempt,
        member,
        host=str(self.request.hostname or "unknown"),
        sender=CelerySender(celery_app),
    )


@celery_app.task(name=ENSEMBLE_JOIN.name, acks_late=True)
def join_members(cycle_id: int, attempt: int) -> str:
    """Assemble the members, evaluate, score and open the queue (once per attempt)."""
    from app.core.tasks import CelerySender
    from worker.pipeline.ensemble import run_join
    from worker.pipeline.runtime import runtime

    return run_join(runtime(), cycle_id, attempt, sender=CelerySender(celery_app))
