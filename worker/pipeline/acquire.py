"""One acquisition cycle: train on the labelled pool, evaluate, score the rest, fill the queue.

Every phase is recorded on the cycle (state, timings, metrics, checkpoint and score hashes),
so a cycle can be reproduced from its row: same labelled-set hash + seed + strategy + params.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import numpy as np
import torch

from app.core.enums import CycleState
from app.core.tasks import TaskSender
from worker.ml.ceal import options_of
from worker.ml.data import LoaderPool
from worker.ml.device import resolve_device
from worker.ml.ensemble import ensemble_size
from worker.ml.evaluation import evaluate
from worker.ml.models import Classifier
from worker.ml.networks import augmentation_for, build_network, objective_for
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.strategies.base import ScoringContext, Selection, Strategy
from worker.ml.training import TrainConfig, TrainingPaused
from worker.pipeline import cancel, ensemble, fair_share, shards, transitions
from worker.pipeline.common import (
    SCORE_BATCH,
    dataset_of,
    start_from_pretraining,
    state_bytes,
)
from worker.pipeline.pseudo import record_generated, train_cycle_network
from worker.pipeline.runtime import Runtime, celery_sender
from worker.pipeline.shard_plan import ScoringPlan, plan_bounds, recorded_rows
from worker.pipeline.snapshot import CycleInputs

log = logging.getLogger(__name__)


def run_acquire_cycle(
    rt: Runtime,
    cycle_id: int,
    sender: TaskSender | None = None,
    *,
    task_id: str | None = None,
    takeover: bool = False,
) -> str:
    """Run (or finish) one cycle; returns what happened, for the task's log line.

    ``sender`` sends the shard tasks of a sharded cycle (default: the worker's Celery app).
    ``task_id``, ``takeover``: which message this is, and whether it may take over a begun
    run (``transitions.claim``).
    """
    inputs = transitions.claim(rt.factory, cycle_id, rt.blobs, task_id=task_id, takeover=takeover)
    if inputs is None:
        return "nothing to do"
    try:
        return _run(rt, inputs, sender)
    except cancel.CycleStopped as stop:
        log.info("cycle %s stopped: %s", cycle_id, stop)
        return str(stop)
    except Exception as exc:
        log.exception("cycle %s failed", cycle_id)
        transitions.fail(rt.factory, cycle_id, f"{type(exc).__name__}: {exc}")
        raise


def _run(rt: Runtime, inputs: CycleInputs, sender: TaskSender | None) -> str:
    timings: dict[str, float] = {}
    device = resolve_device()
    spec = ModelSpec.from_dict(inputs.model_spec)
    budget = _batch_budget(inputs)
    cold_start = len(inputs.labelled) == 0
    strategy = get_strategy(inputs.strategy, **inputs.params)
    # With nothing labelled there is no trained model to score with: random, unless the
    # strategy reads the inputs only (TypiClust or ProbCover on the inputs).
    if cold_start and not strategy.runs_cold:
        strategy = get_strategy("random")
    strategy_name = strategy.name
    paused, resume = fair_share.resumable(rt.factory, rt.blobs, inputs)
    spent_s = paused.run_s if paused else 0.0
    # Every item read below checks, at most once a second, that the cycle should go on.
    watch = cancel.watch(rt, inputs.cycle_id, phase="training", spent_s=spent_s)
    watch.check_now()
    run_start = time.monotonic()
    pool = LoaderPool(watch.guard(dataset_of(rt, inputs.candidates, spec)), batch_size=SCORE_BATCH)
    metrics: dict[str, Any] = {
        "labelled_items": len(inputs.labelled),
        "labels": int(inputs.counts.sum()),
        "targets": inputs.aggregation,  # vote distributions, or that model's posteriors
        "candidates": len(inputs.candidates),
        "device": device.type,
        "cold_start": cold_start,
    }

    if not cold_start and ensemble_size(strategy):
        # M members train as separate tasks on any workers; their join scores (ensemble.py).
        if not ensemble.dispatch(rt, inputs, strategy, budget, metrics=metrics, sender=sender):
            return "cancelled while training"
        return f"training {ensemble_size(strategy)} ensemble members"

    # The network the strategy scores with (learning loss: with its loss-prediction module).
    model = cast(Classifier, build_network(strategy, spec, inputs.seed))
    start_from_pretraining(rt, model, inputs)
    if spec.backbone is not None:  # which weights the backbone had: the name may be re-pointed
        sha256 = getattr(model, "weights_sha256", None)
        metrics["backbone"] = {"name": spec.backbone, "sha256": sha256}
    checkpoint: str | None = None
    if not cold_start:
        t0 = time.perf_counter()
        # Per-epoch recordings (dispersion) only over the rows that will be scored: with a
        # candidate subset of a large pool, recording the whole pool every epoch is the cost.
        cand = strategy.candidate_indices(len(pool), inputs.seed)
        epoch_callback = strategy.epoch_callback(pool if cand is None else pool.subset(cand))
        # BGADL's generated samples, trained on with the labelled items.
        augmenter = augmentation_for(strategy, inputs.seed, device)
        # Only a plain training pauses for another project's cycle: what dispersion records
        # each epoch, CEAL's second stage and BGADL's generator would not survive a pause.
        share = None
        if epoch_callback is None and options_of(inputs.params) is None and augmenter is None:
            share = fair_share.FairShare(
                rt.factory,
                inputs.project_id,
                rt.settings.cycle_slice_s,
                waited_s=rt.settings.cycle_turn_wait_s,
            )
        try:
            results, pseudo_labels = train_cycle_network(
                rt,
                inputs,
                model,
                seed=inputs.seed,
                candidates=pool,
                watch=watch,
                device=device,
                epoch_callback=epoch_callback,
                objective=objective_for(strategy, TrainConfig.from_hparams(spec.hparams)),
                pause=share,
                resume=resume if share is not None else None,
                augment=augmenter,
            )
        except TrainingPaused as stop:
            assert share is not None  # only a FairShare pauses
            pauses = (paused.pauses if paused else 0) + 1
            run_s = spent_s + time.monotonic() - run_start
            sent = fair_share.pause(
                rt.factory,
                rt.blobs,
                sender or celery_sender(),
                inputs,
                stop.state,
                run_s,
                pauses,
                share,
            )
            return f"paused after epoch {stop.state.epochs_done}" if sent else "cancelled"
        # Training's own clock: a resumed run counts the slices before the pause too.
        timings["train_s"] = sum(r.seconds for r in results)
        if paused is not None:
            metrics["pauses"] = paused.pauses
            metrics["resumed_at_epoch"] = resume.epochs_done if resume else 0
        metrics["train_loss"] = results[-1].losses[-1]
        if pseudo_labels is not None:
            metrics["pseudo_labels"] = pseudo_labels
        generated = None if augmenter is None else record_generated(rt, inputs, augmenter)
        if generated is not None:
            metrics["generated"] = generated
        checkpoint = rt.blobs.put(state_bytes(model))
        t0 = time.perf_counter()
        if len(inputs.test):
            test_pool = LoaderPool(
                watch.guard(dataset_of(rt, inputs.test, spec)), batch_size=SCORE_BATCH
            )
            metrics["test"] = evaluate(model, test_pool, inputs.test_labels, device)
        timings["evaluate_s"] = time.perf_counter() - t0
        metrics["test_unlabelled"] = inputs.test_unlabelled

    # Large pools are scored by shard tasks on any worker (shards.py); a cold start never is:
    # random scores are a hash of the position and read no inputs.
    if checkpoint is not None and budget > 0:
        plan = _shard_plan(rt, inputs, strategy, budget, checkpoint)
        if plan is not None:
            if not shards.dispatch(rt, plan, metrics=metrics, timings=timings, sender=sender):
                return "cancelled while training"
            log.info("cycle %s scoring in %d shards", inputs.cycle_id, len(plan.bounds))
            return f"scoring in {len(plan.bounds)} shards"

    if not transitions.advance(
        rt.factory,
        inputs.cycle_id,
        expect=CycleState.training,
        to=CycleState.scoring,
        checkpoint_sha256=checkpoint,
        metrics=metrics,
        timings=dict(timings),
    ):
        return "cancelled while training"

    watch.phase = "scoring"
    t0 = time.perf_counter()
    labelled_pool = (
        LoaderPool(watch.guard(dataset_of(rt, inputs.labelled, spec)), batch_size=SCORE_BATCH)
        if len(inputs.labelled)
        else None
    )
    selection = select_batch(
        strategy,
        model,
        pool,
        labelled_pool,
        device,
        inputs.seed,
        budget,
        ids=np.asarray(inputs.candidates.ids, dtype=np.int64),
        labelled_targets=inputs.training_targets() if len(inputs.labelled) else None,
    )
    timings["score_s"] = time.perf_counter() - t0
    scores_blob = rt.blobs.put(shards.scores_bytes(inputs.candidates, selection))
    item_ids = [inputs.candidates.ids[int(i)] for i in selection.indices]
    scores = [shards.finite_or_none(selection.scores[int(i)]) for i in selection.indices]
    metrics.update(
        queued=len(item_ids),
        strategy_used=strategy_name,
        strategy_params=strategy.params,
    )
    if not transitions.open_queue(
        rt.factory,
        inputs,
        item_ids,
        scores,
        scores_sha256=scores_blob,
        metrics=metrics,
        timings=timings,
        finished_at=None,
    ):
        return "cancelled while scoring"
    log.info("cycle %s queued %d items", inputs.cycle_id, len(item_ids))
    return f"queued {len(item_ids)} items"


def select_batch(
    strategy: Strategy,
    model: Classifier,
    pool: LoaderPool,
    labelled: LoaderPool | None,
    device: torch.device,
    seed: int,
    budget: int,
    ids: np.ndarray | None = None,
    labelled_targets: np.ndarray | None = None,
) -> Selection:
    """Score the candidate ``pool`` (N items) in-process and pick ``budget`` of them.

    ``ids`` (N,): the items' stable ids, which order exactly equal scores (with ``seed``);
    ``labelled_targets`` (M, C): the soft targets of ``labelled``, for suggestive annotation.
    Pure (no DB, no blobs): the simulation harness (``worker/sim/direct.py``) calls it too, so
    a simulated cycle selects exactly what a worker's cycle selects.
    """
    if budget == 0 or len(pool) == 0:
        return Selection(np.zeros(0, np.int64), np.zeros(len(pool)))
    ctx = ScoringContext(
        model=model,
        pool=pool,
        labelled=labelled,
        device=device,
        seed=seed,
        batch_size=SCORE_BATCH,
        ids=ids,
        labelled_targets=labelled_targets,
    )
    return strategy.select(ctx, budget)


def _shard_plan(
    rt: Runtime, inputs: CycleInputs, strategy: Strategy, budget: int, checkpoint: str
) -> ScoringPlan | None:
    """What the shard tasks need, if the scored pool is larger than ``shard_size``."""
    n = len(inputs.candidates)
    subset = strategy.candidate_indices(n, inputs.seed)
    scored = len(subset) if subset is not None else n
    if not shards.wanted(rt.settings.shard_size, scored):
        return None
    return ScoringPlan(
        inputs=inputs,
        strategy=inputs.strategy,
        params=dict(inputs.params),
        budget=budget,
        score_batch=SCORE_BATCH,
        checkpoint_sha256=checkpoint,
        subset=subset,
        recorded=recorded_rows(strategy.training_arrays(), n, subset),
        bounds=plan_bounds(scored, SCORE_BATCH, rt.settings.shard_size),
    )


def _batch_budget(inputs: CycleInputs) -> int:
    """Batch size, cut down so the queued items cannot ask for more labels than remain."""
    if inputs.labels_remaining is None:
        return inputs.batch_size
    return min(inputs.batch_size, inputs.labels_remaining // max(inputs.labels_per_item, 1))


__all__ = ["run_acquire_cycle", "select_batch"]
