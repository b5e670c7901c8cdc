"""One acquisition cycle: train on the labelled pool, evaluate, score the rest, fill the queue.

Every phase is recorded on the cycle (state, timings, metrics, checkpoint and score hashes),
so a cycle can be reproduced from its row: same labelled-set hash + seed + strategy + params.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import numpy as np
import torch

from app.core.enums import CycleState
from worker.ml.data import LoaderPool
from worker.ml.device import resolve_device
from worker.ml.evaluation import evaluate
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.strategies.base import ScoringContext, Selection
from worker.ml.training import TrainConfig, train
from worker.pipeline import transitions
from worker.pipeline.datasets import ItemDataset
from worker.pipeline.runtime import Runtime
from worker.pipeline.snapshot import CycleInputs, ItemRefs

log = logging.getLogger(__name__)
SCORE_BATCH = 256


def run_acquire_cycle(rt: Runtime, cycle_id: int) -> str:
    """Run (or finish) one cycle; returns what happened, for the task's log line."""
    inputs = transitions.claim(rt.factory, cycle_id)
    if inputs is None:
        return "nothing to do"
    try:
        return _run(rt, inputs)
    except Exception as exc:
        log.exception("cycle %s failed", cycle_id)
        transitions.fail(rt.factory, cycle_id, f"{type(exc).__name__}: {exc}")
        raise


def _run(rt: Runtime, inputs: CycleInputs) -> str:
    timings: dict[str, float] = {}
    device = resolve_device()
    spec = ModelSpec.from_dict(inputs.model_spec)
    budget = _batch_budget(inputs)
    cold_start = len(inputs.labelled) == 0
    strategy_name = "random" if cold_start else inputs.strategy
    strategy = get_strategy(strategy_name, **({} if cold_start else inputs.params))
    pool = LoaderPool(_dataset(rt, inputs.candidates, spec), batch_size=SCORE_BATCH)
    metrics: dict[str, Any] = {
        "labelled_items": len(inputs.labelled),
        "labels": int(inputs.counts.sum()),
        "candidates": len(inputs.candidates),
        "device": device.type,
        "cold_start": cold_start,
    }

    model = build_model(spec, seed=inputs.seed)
    checkpoint: str | None = None
    if not cold_start:
        t0 = time.perf_counter()
        config = TrainConfig.from_hparams(spec.hparams)
        targets = inputs.counts / inputs.counts.sum(axis=1, keepdims=True)
        result = train(
            model,
            _dataset(rt, inputs.labelled, spec, targets),
            config,
            seed=inputs.seed,
            device=device,
            epoch_callback=strategy.epoch_callback(pool),
        )
        timings["train_s"] = time.perf_counter() - t0
        metrics["train_loss"] = result.losses[-1]
        checkpoint = rt.blobs.put(_state_bytes(model))
        t0 = time.perf_counter()
        if len(inputs.test):
            test_pool = LoaderPool(_dataset(rt, inputs.test, spec), batch_size=SCORE_BATCH)
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
    if budget == 0 or len(inputs.candidates) == 0:
        selection = Selection(np.zeros(0, np.int64), np.zeros(len(inputs.candidates)))
    else:
        ctx = ScoringContext(
            model=model,
            pool=pool,
            labelled=LoaderPool(_dataset(rt, inputs.labelled, spec), batch_size=SCORE_BATCH)
            if len(inputs.labelled)
            else None,
            device=device,
            seed=inputs.seed,
            batch_size=SCORE_BATCH,
        )
        selection = strategy.select(ctx, budget)
    timings["score_s"] = time.perf_counter() - t0
    scores_blob = rt.blobs.put(_scores_bytes(inputs.candidates, selection))
    item_ids = [inputs.candidates.ids[int(i)] for i in selection.indices]
    scores = [_finite_or_none(selection.scores[int(i)]) for i in selection.indices]
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


def _batch_budget(inputs: CycleInputs) -> int:
    """Batch size, cut down so the queued items cannot ask for more labels than remain."""
    if inputs.labels_remaining is None:
        return inputs.batch_size
    return min(inputs.batch_size, inputs.labels_remaining // max(inputs.labels_per_item, 1))


def _dataset(
    rt: Runtime, refs: ItemRefs, spec: ModelSpec, targets: np.ndarray | None = None
) -> ItemDataset:
    return ItemDataset(rt.blobs, refs.hashes, refs.media_types, spec.input_shape, targets)


def _state_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def _scores_bytes(candidates: ItemRefs, selection: Selection) -> bytes:
    """The scores of the whole scored pool, kept so a cycle's choice can be inspected later."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        item_ids=np.asarray(candidates.ids, dtype=np.int64),
        scores=np.asarray(selection.scores, dtype=np.float64),
        selected=np.asarray(candidates.ids, dtype=np.int64)[selection.indices]
        if len(selection.indices)
        else np.zeros(0, np.int64),
    )
    return buf.getvalue()


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


__all__ = ["run_acquire_cycle"]
