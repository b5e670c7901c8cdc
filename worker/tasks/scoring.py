"""Sharded scoring tasks (see ``worker.pipeline.shards``): thin wrappers that take ids."""

from __future__ import annotations

from typing import Any

from app.core.task_names import SCORE_MERGE, SCORE_SHARD
from worker.celery_app import celery_app


@celery_app.task(name=SCORE_SHARD.name, bind=True, acks_late=True)
def score_shard(
    self: Any, cycle_id: int, attempt: int, shard_index: int, start: int, stop: int
) -> str:
    """Score candidates ``[start, stop)`` of the cycle's plan; returns the result blob hash.
    Idempotent; a task from an attempt the cycle has moved past does nothing."""
    # Imported here so the worker's parent process does not load torch before forking.
    from app.core.tasks import CelerySender
    from worker.pipeline.runtime import runtime
    from worker.pipeline.shards import run_shard

    return run_shard(
        runtime(),
        cycle_id,
        attempt,
        shard_index,
        start,
        stop,
        host=str(self.request.hostname or "unknown"),
        sender=CelerySender(celery_app),
    )


@celery_app.task(name=SCORE_MERGE.name, acks_late=True)
def merge_scores(cycle_id: int, attempt: int) -> str:
    """Merge the shards, choose the batch once and open the queue (once per attempt)."""
    from worker.pipeline.runtime import runtime
    from worker.pipeline.shards import run_merge

    return run_merge(runtime(), cycle_id, attempt)
