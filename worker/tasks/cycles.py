from __future__ import annotations

from worker.celery_app import celery_app


@celery_app.task(name="annoloop.cycles.run", acks_late=True)
def run_cycle(cycle_id: int) -> str:
    """Train, evaluate, score and queue for one cycle. Idempotent: re-running a finished
    cycle does nothing, re-running an interrupted one redoes it and writes one queue."""
    # Imported here so the worker's parent process does not load torch before forking.
    from worker.pipeline.acquire import run_acquire_cycle
    from worker.pipeline.runtime import runtime

    return run_acquire_cycle(runtime(), cycle_id)
