"""Self-supervised pretraining (see ``worker.pipeline.pretrain``): a thin task that takes an id."""

from __future__ import annotations

from typing import Any

from app.core.task_names import PRETRAIN
from worker.celery_app import celery_app


@celery_app.task(name=PRETRAIN.name, bind=True, acks_late=True)
def run_pretraining(
    self: Any, pretraining_id: int, only_queued: bool = False, takeover: bool = False
) -> str:
    """Run, or resume from its last epoch's checkpoint, one pretraining run. Idempotent: a
    finished or cancelled run is left alone, a running one to the message that claimed it
    (its redelivery resumes it) unless ``takeover`` (``worker.recovery``). ``only_queued``
    is ignored: messages queued by older versions carry it."""
    # Imported here so the worker's parent process does not load torch before forking.
    from worker.pipeline.pretrain import run_pretraining as run
    from worker.pipeline.runtime import runtime

    return run(runtime(), pretraining_id, self.request.id, takeover)
