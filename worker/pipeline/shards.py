"""Scoring a large pool in shards on any number of workers, then choosing once.

Flow (pools with more scored candidates than ``settings.shard_size``; ``acquire.py`` keeps
smaller ones in one task):

1. ``annoloop.cycles.run`` trains, stores the checkpoint and a ``ScoringPlan`` blob, and in one
   transaction moves the cycle ``training`` → ``scoring`` with ``metrics["sharding"]`` (plan
   hash, shard bounds, an empty ``done`` map) and queues one ``annoloop.scoring.shard`` per
   shard, sent after the commit, each tagged with the cycle's attempt number.
2. Each shard task rebuilds the model from the checkpoint (eval mode, so every shard scores
   with identical weights whichever worker runs it), runs ``strategy.compute`` on its slice
   with ``offset=start``, stores the arrays as a blob and records ``{index: blob, host}`` in
   ``done`` under a row lock. The task that completes the set queues ``annoloop.scoring.merge``.
3. The merge concatenates the shards (``merge_shards``), runs ``compute_labelled`` and
   ``choose`` once, writes the scores artefact and opens the queue with a compare-and-set on
   (``scoring``, attempt): a redelivered merge finds the cycle in ``labeling`` and stops.

Why not a Celery chord: chord bookkeeping lives in the result backend. On the embedded SQLite
backend it is a polling ``chord_unlock`` task, and on any backend a header task redelivered
under ``acks_late`` counts twice, which can fire the callback early. Recording results on the
cycle row makes "all shards done" a set (idempotent), needs no result backend, survives
result expiry, and keeps the merge's inputs in the blob store for a redelivered merge.
A failing shard or merge marks the cycle failed; the retry endpoint re-runs the whole cycle,
whose new attempt number makes any leftover task of the old one a no-op.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import numpy as np

from app.core.enums import CycleState
from app.core.task_names import SCORE_MERGE, SCORE_SHARD
from app.core.tasks import TaskSender
from app.cycles.models import Cycle
from worker.ml.data import LoaderPool
from worker.ml.device import resolve_device
from worker.ml.ensemble import cycle_model
from worker.ml.models import Classifier
from worker.ml.spec import ModelSpec
from worker.ml.strategies import ScoringContext, Selection, merge_shards
from worker.ml.strategies.base import Arrays
from worker.pipeline import cancel, transitions
from worker.pipeline.common import dataset_of, load_state
from worker.pipeline.runtime import Runtime, celery_sender
from worker.pipeline.shard_plan import ScoringPlan
from worker.pipeline.snapshot import ItemRefs

log = logging.getLogger(__name__)


def wanted(shard_size: int, scored: int) -> bool:
    return shard_size > 0 and scored > shard_size


def dispatch(
    rt: Runtime,
    plan: ScoringPlan,
    *,
    metrics: dict[str, Any],
    timings: dict[str, float],
    sender: TaskSender | None = None,
    expect: CycleState = CycleState.training,
    attempt: int | None = None,
) -> bool:
    """Step 1: ``training`` → ``scoring`` and send the shard tasks; False if cancelled.
    ``expect``/``attempt``: an ensemble's join hands over from ``scoring`` (``ensemble.py``)."""
    sharding = {
        "plan_sha256": rt.blobs.put(plan.to_bytes()),
        "shard_size": rt.settings.shard_size,
        "shards": [list(b) for b in plan.bounds],
        "done": {},
        "dispatched_at": time.time(),  # wall clock: the merge runs in another process
    }

    def change(cycle: Cycle) -> list[transitions.Task]:
        cycle.checkpoint_sha256 = plan.checkpoint_sha256
        cycle.metrics = {**metrics, "sharding": sharding}
        cycle.timings = dict(timings)
        return [
            SCORE_SHARD.message([cycle.id, cycle.attempts, index, start, stop])
            for index, (start, stop) in enumerate(plan.bounds)
        ]

    return transitions.change_locked(
        rt.factory,
        plan.inputs.cycle_id,
        sender or celery_sender(),
        change,
        expect=expect,
        # An ensemble's join is already scoring: it stays there.
        to=None if expect is CycleState.scoring else CycleState.scoring,
        attempt=attempt,
    )


def run_shard(
    rt: Runtime,
    cycle_id: int,
    attempt: int,
    index: int,
    start: int,
    stop: int,
    *,
    host: str,
    sender: TaskSender,
) -> str:
    """Step 2 for one shard; idempotent (a recorded shard is not recomputed)."""
    cycle = transitions.scoring_cycle(rt.factory, cycle_id, attempt)
    if cycle is None:
        return "stale: the cycle is no longer scoring this attempt"
    sharding = cycle.metrics["sharding"]
    watch = cancel.watch(rt, cycle_id, attempt=attempt, phase=f"scoring shard {index}")
    try:
        if sharding["shards"][index] != [start, stop]:
            raise ValueError(f"shard {index} is {sharding['shards'][index]}, not {[start, stop]}")
        result = sharding["done"].get(str(index))
        if result is None:
            t0 = time.perf_counter()
            plan = load_plan(rt, sharding["plan_sha256"])
            arrays = compute_shard(rt, plan, start, stop, watch)
            result = {
                "sha256": rt.blobs.put(arrays_bytes(arrays)),
                "host": host,
                "seconds": round(time.perf_counter() - t0, 4),
            }
            log.info("cycle %s shard %d [%d, %d) scored on %s", cycle_id, index, start, stop, host)

        transitions.record_done(
            rt.factory,
            sender,
            cycle_id,
            attempt,
            "sharding",
            index,
            result,
            total=len(sharding["shards"]),
            then=SCORE_MERGE.message([cycle_id, attempt]),
        )
    except cancel.CycleStopped as stop:
        log.info("cycle %s shard %d stopped: %s", cycle_id, index, stop)
        return str(stop)
    except Exception as exc:
        log.exception("cycle %s shard %d failed", cycle_id, index)
        transitions.fail(
            rt.factory, cycle_id, f"shard {index}: {type(exc).__name__}: {exc}", attempt=attempt
        )
        raise
    return str(result["sha256"])


def run_merge(rt: Runtime, cycle_id: int, attempt: int) -> str:
    """Step 3: merge, choose once, open the queue (exactly once per attempt)."""
    cycle = transitions.scoring_cycle(rt.factory, cycle_id, attempt)
    if cycle is None:
        return "stale: the cycle is no longer scoring this attempt"
    sharding = cycle.metrics["sharding"]
    done = sharding["done"]
    if len(done) < len(sharding["shards"]):
        return f"waiting: {len(done)} of {len(sharding['shards'])} shards recorded"
    try:
        t0 = time.perf_counter()
        plan = load_plan(rt, sharding["plan_sha256"])
        parts = [load_arrays(rt, done[str(i)]["sha256"]) for i in range(len(plan.bounds))]
        strategy = plan.make_strategy()
        selection = choose_merged(rt, plan, parts)
        scores_blob = rt.blobs.put(scores_bytes(plan.inputs.candidates, selection))
        item_ids = [plan.inputs.candidates.ids[int(i)] for i in selection.indices]
        scores = [finite_or_none(selection.scores[int(i)]) for i in selection.indices]
        metrics = {
            **cycle.metrics,
            "queued": len(item_ids),
            "strategy_used": plan.strategy,
            "strategy_params": strategy.params,
        }
        timings = {
            **cycle.timings,
            "merge_s": time.perf_counter() - t0,
            "shards_s": sum(float(d["seconds"]) for d in done.values()),
            "score_s": time.time() - float(sharding["dispatched_at"]),
        }
        opened = transitions.open_queue(
            rt.factory,
            plan.inputs,
            item_ids,
            scores,
            attempt=attempt,
            scores_sha256=scores_blob,
            metrics=metrics,
            timings=timings,
            finished_at=None,
        )
    except Exception as exc:
        log.exception("cycle %s merge failed", cycle_id)
        transitions.fail(
            rt.factory, cycle_id, f"merge: {type(exc).__name__}: {exc}", attempt=attempt
        )
        raise
    if not opened:
        return "stale: the queue was opened already or the cycle left scoring"
    log.info("cycle %s queued %d items from %d shards", cycle_id, len(item_ids), len(parts))
    return f"queued {len(item_ids)} items"


def scoring_model(rt: Runtime, plan: ScoringPlan) -> Classifier:
    """The trained model (an ensemble's members for an ensemble strategy), rebuilt from the
    checkpoint, in eval mode on this host's device."""
    spec = ModelSpec.from_dict(plan.inputs.model_spec)
    model = cycle_model(spec, plan.inputs.seed, plan.make_strategy())
    load_state(rt, model, plan.checkpoint_sha256)
    return model.to(resolve_device()).eval()  # type: ignore[return-value]


def candidate_pool(
    rt: Runtime, plan: ScoringPlan, watch: cancel.CycleWatch | None = None
) -> LoaderPool:
    """The scored pool: all candidates, or the seeded subset, batched as in one task.
    ``watch``: stop reading when the cycle should stop."""
    spec = ModelSpec.from_dict(plan.inputs.model_spec)
    dataset = dataset_of(rt, plan.inputs.candidates, spec)
    pool = LoaderPool(dataset if watch is None else watch.guard(dataset), plan.score_batch)
    return pool.subset(plan.subset) if plan.subset is not None else pool


def compute_shard(
    rt: Runtime,
    plan: ScoringPlan,
    start: int,
    stop: int,
    watch: cancel.CycleWatch | None = None,
) -> Arrays:
    """``strategy.compute`` on scored rows ``[start, stop)``: (stop - start)-row arrays."""
    strategy = plan.make_strategy()
    recorded = {k: v[start:stop] for k, v in plan.recorded.items()}
    ctx = ScoringContext(
        model=scoring_model(rt, plan),
        pool=candidate_pool(rt, plan, watch).shard(start, stop),
        labelled=None,
        device=resolve_device(),
        seed=plan.inputs.seed,
        batch_size=plan.score_batch,
        offset=start,
        recorded=recorded or None,
    )
    return strategy.compute(ctx)


def choose_merged(rt: Runtime, plan: ScoringPlan, parts: list[Arrays]) -> Selection:
    """``choose`` once over the merged shards; positions and scores over all N candidates,
    exactly as ``Strategy.select`` returns them."""
    strategy = plan.make_strategy()
    labelled = None
    if strategy.needs_labelled:
        spec = ModelSpec.from_dict(plan.inputs.model_spec)
        ctx = ScoringContext(
            model=scoring_model(rt, plan),
            pool=candidate_pool(rt, plan),  # not read by compute_labelled
            labelled=LoaderPool(dataset_of(rt, plan.inputs.labelled, spec), plan.score_batch)
            if len(plan.inputs.labelled)
            else None,
            device=resolve_device(),
            seed=plan.inputs.seed,
            batch_size=plan.score_batch,
            labelled_targets=plan.inputs.training_targets() if len(plan.inputs.labelled) else None,
        )
        labelled = strategy.compute_labelled(ctx)
    ids = np.asarray(plan.inputs.candidates.ids, dtype=np.int64)
    if plan.subset is not None:
        ids = ids[plan.subset]
    sel = strategy.choose(merge_shards(parts), plan.budget, plan.inputs.seed, labelled, ids)
    if plan.subset is None:
        return sel
    scores = np.full(len(plan.inputs.candidates), np.nan)
    scores[plan.subset] = sel.scores
    return Selection(indices=plan.subset[sel.indices], scores=scores)


def load_plan(rt: Runtime, sha256: str) -> ScoringPlan:
    return ScoringPlan.from_bytes(rt.blobs.get(sha256))


def arrays_bytes(arrays: Arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # uncompressed: floats barely shrink
    return buf.getvalue()


def load_arrays(rt: Runtime, sha256: str) -> Arrays:
    with np.load(io.BytesIO(rt.blobs.get(sha256)), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def scores_bytes(candidates: ItemRefs, selection: Selection) -> bytes:
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


def no_selection(n: int) -> Selection:
    """Nothing picked out of ``n`` candidates (a zero budget or an empty pool)."""
    return Selection(np.zeros(0, np.int64), np.zeros(n))


def finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
