"""One label-cleaning cycle (Bernhardt et al., Nat. Commun. 2022).

Train on the noisy labels as soft targets (or fine-tune the project's last model), rank every
labelled item by the cleaning score (CE − H by default), and queue the top items that are
neither cleaned already nor still being relabelled, until ``batch_size`` items are queued.
Each queued item is then relabelled, one label at a time, until its votes have a strict
majority (see ``app.queue.service.settle``).
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import numpy as np

from app.core.enums import CycleState
from worker.ml.cleaning import cleaning_scores
from worker.ml.data import LoaderPool
from worker.ml.device import resolve_device
from worker.ml.evaluation import evaluate, predict_proba
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig, train
from worker.pipeline import transitions
from worker.pipeline.common import SCORE_BATCH, dataset_of, load_state, state_bytes
from worker.pipeline.runtime import Runtime
from worker.pipeline.snapshot import CleaningState, CycleInputs, load_cleaning_state

log = logging.getLogger(__name__)


def run_clean_cycle(rt: Runtime, cycle_id: int) -> str:
    inputs = transitions.claim(rt.factory, cycle_id)
    if inputs is None:
        return "nothing to do"
    try:
        return _run(rt, inputs)
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
        raise ValueError("a cleaning project needs imported (noisy) labels before a cycle")
    device = resolve_device()
    spec = ModelSpec.from_dict(inputs.model_spec)
    timings: dict[str, float] = {}
    model = build_model(spec, seed=inputs.seed)
    config = TrainConfig.from_hparams(spec.hparams)
    if state.previous_checkpoint is not None:
        load_state(rt, model, state.previous_checkpoint)
        config = config.for_finetuning()

    t0 = time.perf_counter()
    targets = inputs.counts / inputs.counts.sum(axis=1, keepdims=True)
    result = train(
        model,
        dataset_of(rt, inputs.labelled, spec, targets),
        config,
        seed=inputs.seed,
        device=device,
    )
    timings["train_s"] = time.perf_counter() - t0
    checkpoint = rt.blobs.put(state_bytes(model))
    metrics: dict[str, Any] = {
        "labelled_items": len(inputs.labelled),
        "labels": int(inputs.counts.sum()),
        "train_loss": result.losses[-1],
        "epochs": config.epochs,
        "finetuned_from": state.previous_checkpoint,
        "items_cleaned": len(state.cleaned),
        "device": device.type,
    }
    if len(inputs.test):
        t0 = time.perf_counter()
        test_pool = LoaderPool(dataset_of(rt, inputs.test, spec), batch_size=SCORE_BATCH)
        metrics["test"] = evaluate(model, test_pool, inputs.test_labels, device)
        timings["evaluate_s"] = time.perf_counter() - t0
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

    t0 = time.perf_counter()
    pool = LoaderPool(dataset_of(rt, inputs.labelled, spec), batch_size=SCORE_BATCH)
    probs = predict_proba(model, pool, device).numpy().astype(np.float64)
    scores = cleaning_scores(inputs.strategy, inputs.counts, probs, seed=inputs.seed)
    picks = pick_for_relabelling(inputs.labelled.ids, scores, state, inputs.batch_size)
    timings["score_s"] = time.perf_counter() - t0
    scores_blob = rt.blobs.put(_scores_bytes(inputs.labelled.ids, scores, picks))
    item_ids = [inputs.labelled.ids[i] for i in picks]
    metrics.update(queued=len(item_ids), strategy_used=inputs.strategy)
    if not transitions.open_queue(
        rt.factory,
        inputs,
        item_ids,
        [float(scores[i]) for i in picks],
        carry_open=True,
        scores_sha256=scores_blob,
        metrics=metrics,
        timings=timings,
    ):
        return "cancelled while scoring"
    return f"queued {len(item_ids)} items for relabelling"


def pick_for_relabelling(
    item_ids: list[int], scores: np.ndarray, state: CleaningState, batch_size: int
) -> list[int]:
    """Positions of the best-scoring items that are neither cleaned nor queued, so that
    ``batch_size`` items are being relabelled at once. Ties go to the lower position."""
    wanted = batch_size - len(state.in_queue)
    if wanted <= 0:
        return []
    blocked = state.cleaned | state.in_queue
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [int(i) for i in order if item_ids[int(i)] not in blocked][:wanted]


def _scores_bytes(item_ids: list[int], scores: np.ndarray, picks: list[int]) -> bytes:
    buf = io.BytesIO()
    ids = np.asarray(item_ids, dtype=np.int64)
    np.savez_compressed(
        buf,
        item_ids=ids,
        scores=np.asarray(scores, dtype=np.float64),
        selected=ids[picks] if picks else np.zeros(0, np.int64),
    )
    return buf.getvalue()
