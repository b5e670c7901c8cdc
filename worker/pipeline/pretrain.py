"""One pretraining run on the project's pool: SimCLR (a checkpoint and progress every epoch)
or patch k-means (one step; ``worker/ml/patch_kmeans.py``).

Idempotent by run id. A run ``queued`` is claimed (``running``, attempts + 1, and the task
message's id in ``claimed_by``) by any message. A run already ``running`` is taken over only
by the message that claimed it, redelivered because its worker died (Celery keeps the id), or
by ``worker.recovery``'s explicit takeover; any other copy (the sweep's re-send, a late
original) leaves it to the worker that runs it. A run taken over resumes from its last
checkpoint, not from scratch:
the checkpoint is a full ``PretrainState``, so the result is the same weights, bit for bit
(CPU), as an uninterrupted run. Every epoch's write is a compare-and-set on (``running``,
epochs done), so a cancelled run, or a duplicate task racing the same run, stops there; once
it has committed, the checkpoint blob it replaced is deleted (a finished run keeps its last).

A k-means run is minutes, so it has no partial checkpoint: a redelivered task refits from the
start, and with the same seed the fit is the same encoder (the same blob, bit for bit on one
machine). Its single write (checkpoint, 1 of 1 steps, ``done``) is a compare-and-set on
``running`` too, so a run cancelled while it fits stays cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from app.core.db import unit_of_work, utcnow
from app.core.enums import PretrainingStatus
from app.pretraining import repository
from app.pretraining.models import Pretraining
from app.projects.models import Project
from worker.ml.device import resolve_device
from worker.ml.models import build_model
from worker.ml.patch_kmeans import PatchKMeansConfig, fit
from worker.ml.run_encoders import KMEANS, body_spec, kmeans_checkpoint
from worker.ml.spec import ModelSpec
from worker.ml.ssl import PretrainConfig, PretrainState, pretrain
from worker.pipeline.common import dataset_of, pixels_of
from worker.pipeline.runtime import Runtime
from worker.pipeline.snapshot import ItemRefs, pool_refs

log = logging.getLogger(__name__)
ACTIVE = (PretrainingStatus.queued, PretrainingStatus.running)


class PretrainingStopped(Exception):
    """The run was cancelled, or another task wrote its epoch first."""


@dataclass(frozen=True)
class Claim:
    spec: ModelSpec
    refs: ItemRefs
    params: dict[str, Any]
    checkpoint: str | None  # the last epoch's (SimCLR), if any


def run_pretraining(
    rt: Runtime, run_id: int, task_id: str | None = None, takeover: bool = False
) -> str:
    """Run (or resume) pretraining run ``run_id`` for task message ``task_id``; returns what
    happened, for the log line. ``takeover``: resume it even if another message claimed it."""
    claim = _claim(rt, run_id, task_id, takeover)
    if claim is None:
        return "nothing to do"
    try:
        if claim.params.get("method") == KMEANS:
            return _patch_kmeans(rt, run_id, claim)
        return _simclr(rt, run_id, claim)
    except PretrainingStopped as stop:
        log.info("pretraining %s stopped: %s", run_id, stop)
        return str(stop)
    except Exception as exc:
        log.exception("pretraining %s failed", run_id)
        _finish(rt, run_id, PretrainingStatus.failed, error=f"{type(exc).__name__}: {exc}")
        raise


def _simclr(rt: Runtime, run_id: int, claim: Claim) -> str:
    params = claim.params
    config = PretrainConfig(
        epochs=int(params["epochs"]),
        batch_size=int(params["batch_size"]),
        lr=float(params["lr"]),
        temperature=float(params["temperature"]),
        seed=int(params["seed"]),
    )
    resume = PretrainState.from_bytes(rt.blobs.get(claim.checkpoint)) if claim.checkpoint else None
    if resume is not None:
        log.warning("pretraining %s resumes after epoch %d", run_id, resume.epochs_done)
    # A pretrained project has no body: the run trains the one it recorded. Any other trains
    # the project's own spec, whose class count can change the body's seeded init (resnet18).
    spec = body_spec(params["model"]) if claim.spec.name == "pretrained" else claim.spec
    model = build_model(spec, seed=config.seed)
    state = pretrain(
        model.body,
        model.feature_dim,
        dataset_of(rt, claim.refs, spec),
        config,
        device=resolve_device(),
        resume=resume,
        on_epoch=lambda s: _record_epoch(rt, run_id, s),
    )
    _finish(rt, run_id, PretrainingStatus.done)
    return f"pretrained {state.epochs_done} epochs, loss {state.losses[-1]:.4f}"


def _patch_kmeans(rt: Runtime, run_id: int, claim: Claim) -> str:
    """Fit on every pool image, decoded as cycles decode them; store config + buffers."""
    params = claim.params
    config = PatchKMeansConfig(
        patch=int(params["patch"]),
        centroids=int(params["centroids"]),
        patches=int(params["patches"]),
        iterations=int(params["iterations"]),
    )
    images = pixels_of(rt, claim.refs, claim.spec.input_shape)
    encoder = fit(images, config, seed=int(params["seed"]))
    sha256 = rt.blobs.put(kmeans_checkpoint(encoder, config))
    with unit_of_work(rt.factory) as db:
        written = db.execute(
            update(Pretraining)
            .where(Pretraining.id == run_id, Pretraining.status == PretrainingStatus.running)
            .values(
                epochs_done=1,
                checkpoint_sha256=sha256,
                status=PretrainingStatus.done,
                finished_at=utcnow(),
            )
        ).rowcount  # type: ignore[attr-defined]
    if written != 1:
        raise PretrainingStopped(f"run {run_id} was cancelled while it fitted")
    return f"fitted {encoder.feature_dim // 4} centroids on {len(images)} images"


def _claim(rt: Runtime, run_id: int, task_id: str | None, takeover: bool) -> Claim | None:
    """Mark the run running for message ``task_id`` and read what it trains on, in one
    transaction (under the run's row lock, so two messages cannot both claim it)."""
    with unit_of_work(rt.factory) as db:
        run = db.get(Pretraining, run_id, with_for_update=True)
        if run is None or run.status not in ACTIVE or not _ours(run, task_id, takeover):
            return None
        project = db.get(Project, run.project_id)
        assert project is not None
        spec = ModelSpec.from_dict(project.model_spec)
        params: dict[str, Any] = dict(run.params)
        if not _fits(spec, params):
            # Its checkpoint would fit no cycle of the project; say so rather than train.
            run.status, run.finished_at = PretrainingStatus.failed, utcnow()
            run.error = f"the project's model changed to {spec.body_key()} since the start"
            return None
        run.status = PretrainingStatus.running
        run.claimed_by = task_id
        run.attempts += 1
        run.started_at = run.started_at or utcnow()
        refs = pool_refs(db, project)
        run.items = len(refs)
        return Claim(spec, refs, params, run.checkpoint_sha256)


def _ours(run: Pretraining, task_id: str | None, takeover: bool) -> bool:
    """A queued run is any message's; a running one its claimer's (``app.core.claims``)."""
    if run.status is PretrainingStatus.queued or takeover or run.claimed_by is None:
        return True
    return run.claimed_by == task_id


def _fits(spec: ModelSpec, params: dict[str, Any]) -> bool:
    """SimCLR: the same body, or (a pretrained model, which has none) images of its shape.
    k-means: the same image shape (the network may differ)."""
    shape = params["model"]["input_shape"]
    if params.get("method") == KMEANS:
        return spec.input is None and list(spec.input_shape) == shape
    if spec.name == "pretrained":
        return list(spec.input_shape) == shape
    return bool(spec.body_key() == params["model"])


def _record_epoch(rt: Runtime, run_id: int, state: PretrainState) -> None:
    """Store the epoch's checkpoint and progress, if the run is still ours to write, then
    delete the checkpoint it replaced. The new blob is written before the row names it and the
    old one deleted only after that commit, so a crash anywhere leaves the row naming a blob
    that exists (at worst an unnamed blob is left behind)."""
    sha256 = rt.blobs.put(state.to_bytes())
    with unit_of_work(rt.factory) as db:
        old = db.scalar(select(Pretraining.checkpoint_sha256).where(Pretraining.id == run_id))
        written = db.execute(
            update(Pretraining)
            .where(
                Pretraining.id == run_id,
                Pretraining.status == PretrainingStatus.running,
                Pretraining.epochs_done == state.epochs_done - 1,
                # What it replaces is the checkpoint read above, whoever wrote it.
                Pretraining.checkpoint_sha256.is_(None)
                if old is None
                else Pretraining.checkpoint_sha256 == old,
            )
            .values(
                epochs_done=state.epochs_done,
                losses=list(state.losses),
                checkpoint_sha256=sha256,
            )
        ).rowcount  # type: ignore[attr-defined]
    if written != 1:
        _drop_unused(rt, sha256)  # never recorded: no run will resume from it
        raise PretrainingStopped(f"run {run_id} was cancelled or is written by another task")
    if old is not None and old != sha256:
        _drop_unused(rt, old)


def _drop_unused(rt: Runtime, sha256: str) -> None:
    """Delete a checkpoint blob that no run or cycle names. Best effort: a blob left over
    costs disk, a run failed for it would cost the run."""
    try:
        with unit_of_work(rt.factory) as db:
            if repository.checkpoint_in_use(db, sha256):
                return
        rt.blobs.delete(sha256)
    except Exception:
        log.warning("could not delete checkpoint blob %s", sha256, exc_info=True)


def _finish(rt: Runtime, run_id: int, status: PretrainingStatus, error: str | None = None) -> None:
    with unit_of_work(rt.factory) as db:
        db.execute(
            update(Pretraining)
            .where(Pretraining.id == run_id, Pretraining.status == PretrainingStatus.running)
            .values(status=status, error=error, finished_at=utcnow())
        )
