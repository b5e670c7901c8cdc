"""One label-cleaning cycle (Bernhardt et al., Nat. Commun. 2022).

Train on the noisy labels as soft targets (or fine-tune the project's last model), rank every
labelled item by the cleaning score (CE − H by default) computed from held-out predictions
(K fold models, ``crossfit.py``; in-sample with ``folds`` 0), and queue the best-ranked items
that are neither cleaned already nor still being relabelled
(``transitions.open_cleaning_queue``). Each queued item is then relabelled, one label at a
time, until its votes have a strict majority (see ``app.queue.service.settle``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from app.core.enums import CycleState
from app.cycles.strategies import MIXED_QUEUE_STRATEGY
from worker.ml.cleaning import cleaning_scores
from worker.ml.data import LoaderPool
from worker.ml.device import resolve_device
from worker.ml.evaluation import evaluate, predict_proba
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig, train
from worker.pipeline import cancel, crossfit, transitions
from worker.pipeline.common import (
    SCORE_BATCH,
    dataset_of,
    load_state,
    start_from_pretraining,
    state_bytes,
)
from worker.pipeline.mixed import mixed_ranking
from worker.pipeline.runtime import Runtime, celery_sender
from worker.pipeline.snapshot import CycleInputs, ItemRefs, load_cleaning_state

log = logging.getLogger(__name__)


def run_clean_cycle(
    rt: Runtime, cycle_id: int, *, task_id: str | None = None, takeover: bool = False
) -> str:
    inputs = transitions.claim(rt.factory, cycle_id, rt.blobs, task_id=task_id, takeover=takeover)
    if inputs is None:
        return "nothing to do"
    try:
        return _run(rt, inputs)
    except cancel.CycleStopped as stop:
        log.info("cleaning cycle %s stopped: %s", cycle_id, stop)
        return str(stop)
    except Exception as exc:
        log.exception("cleaning cycle %s failed", cycle_id)
        transitions.fail(rt.factory, cycle_id, f"{type(exc).__name__}: {exc}")
        raise


def _run(rt: Runtime, inputs: CycleInputs) -> str:
    with rt.factory() as db:
        from app.cycles.models import Cycle

        cycle = db.get(Cycle, inputs.cycle_id)
        assert cycle is not None
        state = load_cleaning_state(db, cycle)
    if len(inputs.labelled) == 0:
        raise ValueError(
            "a cleaning project needs imported (noisy) labels before a cycle: its model "
            "trains on them (with activelab too, before it ranks new items)"
        )
    device = resolve_device()
    spec = ModelSpec.from_dict(inputs.model_spec)
    timings: dict[str, float] = {}
    watch = cancel.watch(rt, inputs.cycle_id, phase="training")
    watch.check_now()
    model = build_model(spec, seed=inputs.seed)
    config = TrainConfig.from_hparams(spec.hparams)
    start_from_pretraining(rt, model, inputs)  # a previous checkpoint, if any, overrides it
    if state.previous_checkpoint is not None:
        load_state(rt, model, state.previous_checkpoint)
        config = config.for_finetuning()

    t0 = time.perf_counter()
    targets = inputs.training_targets()
    result = train(
        model,
        watch.guard(dataset_of(rt, inputs.labelled, spec, targets)),
        config,
        seed=inputs.seed,
        device=device,
    )
    timings["train_s"] = time.perf_counter() - t0
    checkpoint = rt.blobs.put(state_bytes(model))
    metrics: dict[str, Any] = {
        "labelled_items": len(inputs.labelled),
        "labels": int(inputs.counts.sum()),
        "targets": inputs.aggregation,  # vote distributions, or that model's posteriors
        "train_loss": result.losses[-1],
        "epochs": config.epochs,
        "finetuned_from": state.previous_checkpoint,
        "items_cleaned": len(state.cleaned),
        "device": device.type,
    }
    if len(inputs.test):
        t0 = time.perf_counter()
        test_pool = LoaderPool(
            watch.guard(dataset_of(rt, inputs.test, spec)), batch_size=SCORE_BATCH
        )
        metrics["test"] = evaluate(model, test_pool, inputs.test_labels, device)
        timings["evaluate_s"] = time.perf_counter() - t0
    metrics["test_unlabelled"] = inputs.test_unlabelled
    candidate_probs = None
    if inputs.strategy == MIXED_QUEUE_STRATEGY:
        # New items are scored by the model that trained on every labelled item.
        t0 = time.perf_counter()
        candidate_probs = _predict(rt, model, inputs.candidates, spec, device, watch)
        timings["score_new_s"] = time.perf_counter() - t0
    if crossfit.folds_of(inputs) >= 2:
        plan = crossfit.make_plan(inputs, checkpoint, candidate_probs)
        if not crossfit.dispatch(
            rt, plan, state.previous_crossfit, metrics=metrics, timings=timings
        ):
            return "cancelled while training"
        return f"training {crossfit.folds_of(inputs)} fold models for held-out scores"
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

    # In-sample scores (folds = 0): kept to compare against; the model judges the very
    # labels it fitted, so on a network that memorises them the ranking carries nothing.
    watch.phase = "scoring"
    t0 = time.perf_counter()
    probs = _predict(rt, model, inputs.labelled, spec, device, watch)
    if candidate_probs is not None:
        mixed = mixed_ranking(inputs, probs, candidate_probs)
        ranked = mixed.ranked
        artefact = crossfit.scores_bytes(mixed.item_ids, mixed.scores, mixed.probs)
        metrics.update(labelled_scored=mixed.labelled_scored, new_scored=mixed.new_scored)
    else:
        scores = cleaning_scores(inputs.strategy, inputs.counts, probs, seed=inputs.seed)
        ranked = crossfit.ranking(inputs.labelled.ids, scores)
        artefact = crossfit.scores_bytes(inputs.labelled.ids, scores, probs)
    timings["score_s"] = time.perf_counter() - t0
    metrics.update(strategy_used=inputs.strategy, in_sample=True)
    if not transitions.open_cleaning_queue(
        rt.factory,
        inputs,
        ranked,
        sender=celery_sender(),
        scores_sha256=rt.blobs.put(artefact),
        metrics=metrics,
        timings=timings,
    ):
        return "cancelled while scoring"
    return f"ranked {len(ranked)} items for relabelling"


def _predict(
    rt: Runtime,
    model: torch.nn.Module,
    refs: ItemRefs,
    spec: ModelSpec,
    device: torch.device,
    watch: cancel.CycleWatch,
) -> np.ndarray:
    """(len(refs), C) float64 class probabilities of the items."""
    if len(refs) == 0:
        return np.zeros((0, spec.num_classes))
    pool = LoaderPool(watch.guard(dataset_of(rt, refs, spec)), batch_size=SCORE_BATCH)
    return predict_proba(model, pool, device).numpy().astype(np.float64)
