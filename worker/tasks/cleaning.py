"""Cross-fitted cleaning scores (see ``worker.pipeline.crossfit``): thin tasks that take ids."""

from __future__ import annotations

from typing import Any

from app.core.task_names import CLEANING_FOLD, CLEANING_MERGE
from worker.celery_app import celery_app


@celery_app.task(name=CLEANING_FOLD.name, bind=True, acks_late=True)
def train_fold(self: Any, cycle_id: int, attempt: int, fold: int) -> str:
    """Train fold model ``fold`` and record its held-out predictions. Idempotent; a task of
    an attempt the cycle has moved past does nothing."""
    # Imported here so the worker's parent process does not load torch before forking.
    from app.core.tasks import CelerySender
    from worker.pipeline.crossfit import run_fold
    from worker.pipeline.runtime import runtime

    return run_fold(
        runtime(),
        cycle_id,
        attempt,
        fold,
        host=str(self.request.hostname or "unknown"),
        sender=CelerySender(celery_app),
    )


@celery_app.task(name=CLEANING_MERGE.name, acks_late=True)
def merge_folds(cycle_id: int, attempt: int) -> str:
    """Score every labelled item from the held-out predictions and open the queue."""
    from worker.pipeline.crossfit import run_merge
    from worker.pipeline.runtime import runtime

    return run_merge(runtime(), cycle_id, attempt)
