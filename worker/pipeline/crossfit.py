"""Out-of-sample cleaning scores: K fold models as separate tasks, then one merge.

Flow (a cleaning cycle whose ``params["folds"]`` K is at least 2; ``clean.py`` runs the rest):

1. ``annoloop.cycles.run`` trains the cycle's model on every labelled item (its checkpoint,
   test metrics and the next cycle's fine-tuning start), stores a plan blob (the snapshotted
   inputs and each item's fold), and in one transaction moves the cycle ``training`` →
   ``scoring`` with ``metrics["crossfit"]`` (plan hash, K, an empty ``done`` map, the last
   cycle's fold checkpoints when its folds were the same) and queues one
   ``annoloop.cleaning.fold`` task per fold on the ``train`` queue, sent after the commit.
2. Fold task k trains a model on the other folds (fine-tuning last cycle's fold model k when
   there is one: it never saw fold k either), predicts fold k, stores its checkpoint and the
   held-out probabilities, and records ``{k: ...}`` in ``done`` under a row lock. The task that
   completes the set queues ``annoloop.cleaning.merge``. Any number of workers run folds at
   once; the embedded worker runs them one after another.
3. The merge puts the held-out blocks together, scores every labelled item with the cycle's
   cleaning score, stores scores and held-out probabilities (what model-aware aggregation
   reads), and opens the queue with a compare-and-set on (``scoring``, attempt).

The guards are those of sharded scoring (``shards.py``): every task carries the cycle's attempt,
so tasks of an earlier attempt can neither record, fail nor open anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from typing import Any

import numpy as np

from app.core.enums import CycleState
from app.core.task_names import CLEANING_FOLD, CLEANING_MERGE
from app.core.tasks import TaskSender
from app.cycles.models import Cycle
from worker.ml.cleaning import cleaning_scores, cross_entropy
from worker.ml.crossfit import assemble, fold_ids, heldout_proba, train_fold
from worker.ml.device import resolve_device
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig
from worker.pipeline import cancel, transitions
from worker.pipeline.common import (
    SCORE_BATCH,
    dataset_of,
    load_state,
    start_from_pretraining,
    state_bytes,
)
from worker.pipeline.mixed import CANDIDATE_PROBS_KEY, mixed_ranking
from worker.pipeline.runtime import Runtime, celery_sender
from worker.pipeline.shard_plan import ScoringPlan
from worker.pipeline.snapshot import CycleInputs

log = logging.getLogger(__name__)
FOLDS_KEY = "folds"  # ScoringPlan.recorded: (L,) fold of each labelled item


def folds_of(inputs: CycleInputs) -> int:
    """K from the cycle's params (recorded when the cycle was created); 0 = in-sample."""
    return int(inputs.params.get("folds", 0) or 0)


def make_plan(
    inputs: CycleInputs, checkpoint: str, candidate_probs: np.ndarray | None = None
) -> ScoringPlan:
    """The frozen inputs every fold and the merge read. The folds are drawn with
    ``params["fold_seed"]`` (the project's seed, not the cycle's), so an item keeps its fold
    from cycle to cycle while the labelled items stay the same. ``candidate_probs``: the full
    model's probabilities of the unlabelled items, for the mixed queue."""
    fold_seed = int(inputs.params.get("fold_seed", 0))
    folds = fold_ids(len(inputs.labelled), folds_of(inputs), fold_seed)
    recorded = {FOLDS_KEY: folds}
    if candidate_probs is not None:
        recorded[CANDIDATE_PROBS_KEY] = np.asarray(candidate_probs, dtype=np.float64)
    return ScoringPlan(
        inputs=inputs,
        strategy=inputs.strategy,
        params=dict(inputs.params),
        budget=inputs.batch_size,
        score_batch=SCORE_BATCH,
        checkpoint_sha256=checkpoint,
        subset=None,
        recorded=recorded,
    )


def dispatch(
    rt: Runtime,
    plan: ScoringPlan,
    previous: dict[str, Any] | None,
    *,
    metrics: dict[str, Any],
    timings: dict[str, float],
    sender: TaskSender | None = None,
) -> bool:
    """Step 1: ``training`` → ``scoring`` and send the fold tasks; False if cancelled.
    ``previous``: the last cycle's ``metrics["crossfit"]``, whose fold models are fine-tuned
    when they were trained on the same folds."""
    k = folds_of(plan.inputs)
    folds_sha = _folds_hash(plan)
    start_from: dict[str, str] = {}
    if previous and previous.get("folds_sha256") == folds_sha:
        start_from = {i: d["checkpoint"] for i, d in previous.get("done", {}).items()}
    crossfit = {
        "plan_sha256": rt.blobs.put(plan.to_bytes()),
        "folds": k,
        "folds_sha256": folds_sha,
        "start_from": start_from,
        "done": {},
        "dispatched_at": time.time(),  # wall clock: the merge runs in another process
    }

    def change(cycle: Cycle) -> list[transitions.Task]:
        cycle.checkpoint_sha256 = plan.checkpoint_sha256
        cycle.metrics = {**metrics, "crossfit": crossfit}
        cycle.timings = dict(timings)
        return [CLEANING_FOLD.message([cycle.id, cycle.attempts, i]) for i in range(k)]

    return transitions.change_locked(
        rt.factory,
        plan.inputs.cycle_id,
        sender or celery_sender(),
        change,
        expect=CycleState.training,
        to=CycleState.scoring,
    )


def run_fold(
    rt: Runtime, cycle_id: int, attempt: int, fold: int, *, host: str, sender: TaskSender
) -> str:
    """Step 2 for one fold; idempotent (a recorded fold is not retrained)."""
    cycle = transitions.scoring_cycle(rt.factory, cycle_id, attempt)
    if cycle is None:
        return "stale: the cycle is no longer scoring this attempt"
    crossfit = cycle.metrics["crossfit"]
    watch = cancel.watch(rt, cycle_id, attempt=attempt, phase=f"training fold {fold}")
    try:
        result = crossfit["done"].get(str(fold))
        if result is None:
            result = _train_fold(rt, crossfit, fold, host, watch)

        transitions.record_done(
            rt.factory,
            sender,
            cycle_id,
            attempt,
            "crossfit",
            fold,
            result,
            total=int(crossfit["folds"]),
            then=CLEANING_MERGE.message([cycle_id, attempt]),
        )
    except cancel.CycleStopped as stop:
        log.info("cycle %s fold %d stopped: %s", cycle_id, fold, stop)
        return str(stop)
    except Exception as exc:
        log.exception("cycle %s fold %d failed", cycle_id, fold)
        transitions.fail(
            rt.factory, cycle_id, f"fold {fold}: {type(exc).__name__}: {exc}", attempt=attempt
        )
        raise
    return str(result["probs"])


def _train_fold(
    rt: Runtime, crossfit: dict[str, Any], fold: int, host: str, watch: cancel.CycleWatch
) -> dict[str, Any]:
    t0 = time.perf_counter()
    plan = ScoringPlan.from_bytes(rt.blobs.get(crossfit["plan_sha256"]))
    inputs = plan.inputs
    spec = ModelSpec.from_dict(inputs.model_spec)
    config = TrainConfig.from_hparams(spec.hparams)
    model = build_model(spec, seed=inputs.seed + fold)
    start_from_pretraining(rt, model, inputs)  # last cycle's fold model, if any, overrides it
    start = crossfit["start_from"].get(str(fold))
    if start is not None:
        load_state(rt, model, start)
        config = config.for_finetuning()
    dataset = watch.guard(dataset_of(rt, inputs.labelled, spec, inputs.training_targets()))
    folds = plan.recorded[FOLDS_KEY]
    device = resolve_device()
    result = train_fold(model, dataset, folds, fold, config, seed=inputs.seed, device=device)
    probs = heldout_proba(model, dataset, folds, fold, device=device, batch_size=SCORE_BATCH)
    log.info("cycle %s fold %d trained on %s", inputs.cycle_id, fold, host)
    return {
        "checkpoint": rt.blobs.put(state_bytes(model)),
        "probs": rt.blobs.put(_array_bytes(probs)),
        "finetuned": start is not None,
        "train_loss": result.losses[-1],
        "host": host,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def run_merge(rt: Runtime, cycle_id: int, attempt: int) -> str:
    """Step 3: held-out scores for every labelled item, then the queue (once per attempt)."""
    cycle = transitions.scoring_cycle(rt.factory, cycle_id, attempt)
    if cycle is None:
        return "stale: the cycle is no longer scoring this attempt"
    crossfit = cycle.metrics["crossfit"]
    done = crossfit["done"]
    if len(done) < int(crossfit["folds"]):
        return f"waiting: {len(done)} of {crossfit['folds']} folds recorded"
    try:
        t0 = time.perf_counter()
        plan = ScoringPlan.from_bytes(rt.blobs.get(crossfit["plan_sha256"]))
        inputs = plan.inputs
        parts = [_load_array(rt, done[str(i)]["probs"]) for i in range(len(done))]
        heldout = assemble(plan.recorded[FOLDS_KEY], parts)
        targets = inputs.counts / inputs.counts.sum(axis=1, keepdims=True)
        metrics = {
            **cycle.metrics,
            "strategy_used": inputs.strategy,
            "heldout_loss": float(np.mean(cross_entropy(targets, heldout))),
            "in_sample": False,
        }
        if CANDIDATE_PROBS_KEY in plan.recorded:
            mixed = mixed_ranking(inputs, heldout, plan.recorded[CANDIDATE_PROBS_KEY])
            ranked = mixed.ranked
            artefact = scores_bytes(mixed.item_ids, mixed.scores, mixed.probs)
            metrics.update(labelled_scored=mixed.labelled_scored, new_scored=mixed.new_scored)
        else:
            scores = cleaning_scores(inputs.strategy, inputs.counts, heldout, seed=inputs.seed)
            ranked = ranking(inputs.labelled.ids, scores)
            artefact = scores_bytes(inputs.labelled.ids, scores, heldout)
        timings = {
            **cycle.timings,
            "folds_s": sum(float(d["seconds"]) for d in done.values()),
            "score_s": time.time() - float(crossfit["dispatched_at"]),
            "merge_s": time.perf_counter() - t0,
        }
        opened = transitions.open_cleaning_queue(
            rt.factory,
            inputs,
            ranked,
            attempt=attempt,
            sender=celery_sender(),
            scores_sha256=rt.blobs.put(artefact),
            metrics=metrics,
            timings=timings,
        )
    except Exception as exc:
        log.exception("cycle %s cross-fitting merge failed", cycle_id)
        transitions.fail(
            rt.factory, cycle_id, f"merge: {type(exc).__name__}: {exc}", attempt=attempt
        )
        raise
    if not opened:
        return "stale: the queue was opened already or the cycle left scoring"
    return f"ranked {len(ranked)} items from {len(parts)} folds"


def ranking(item_ids: list[int], scores: np.ndarray) -> list[tuple[int, float]]:
    """(item id, score), best first; equal scores keep the item order (ascending id)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [(item_ids[int(i)], float(scores[int(i)])) for i in order]


def scores_bytes(item_ids: list[int] | np.ndarray, scores: np.ndarray, probs: np.ndarray) -> bytes:
    """The cycle's score artefact: every scored item's score and the probabilities that
    scored it (held-out here; the model's own when in-sample), ``item_ids`` ascending (model-
    aware aggregation looks items up by binary search)."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        item_ids=np.asarray(item_ids, dtype=np.int64),
        scores=np.asarray(scores, dtype=np.float64),
        probs=np.asarray(probs, dtype=np.float32),
    )
    return buf.getvalue()


def _folds_hash(plan: ScoringPlan) -> str:
    """Equal hashes: the same items in the same folds for the same network, so last cycle's
    fold model k may be fine-tuned for fold k."""
    ids = np.asarray(plan.inputs.labelled.ids, dtype=np.int64)
    digest = hashlib.sha256(ids.tobytes())
    digest.update(np.asarray(plan.recorded[FOLDS_KEY], dtype=np.int64).tobytes())
    digest.update(json.dumps(plan.inputs.model_spec, sort_keys=True).encode())
    return digest.hexdigest()


def _array_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float64), allow_pickle=False)
    return buf.getvalue()


def _load_array(rt: Runtime, sha256: str) -> np.ndarray:
    return np.asarray(np.load(io.BytesIO(rt.blobs.get(sha256)), allow_pickle=False))
