"""Self-supervised pretraining (see ``worker.pipeline.pretrain``): a thin task that takes an id."""

from __future__ import annotations

from app.core.task_names import PRETRAIN
from worker.celery_app import celery_app


@celery_app.task(name=PRETRAIN.name, acks_late=True)
def run_pretraining(pretraining_id: int, only_queued: bool = False) -> str:
    """Run, or resume from its last epoch's checkpoint, one pretraining run. Idempotent: a
    finished or cancelled run is left alone. ``only_queued``: a re-send by the API's sweep."""
    # Imported here so the worker's parent process does not load torch before forking.
    from worker.pipeline.pretrain import run_pretraining as run
    from worker.pipeline.runtime import runtime

    return run(runtime(), pretraining_id, only_queued)
