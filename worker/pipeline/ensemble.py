"""Ensemble cycles: the M members train as separate tasks, then one join scores and queues.

Flow (an acquisition cycle whose strategy scores with an ensemble, ``ensemble_size > 0``, and
which has labels; a cold start is random as always):

1. ``annoloop.cycles.run`` stores a plan blob (the snapshotted inputs) and, in one
   transaction, moves the cycle ``training`` → ``scoring`` with ``metrics["ensemble"]`` (plan
   hash, M, the inputs' key, a ``done`` map) and queues one ``annoloop.ensemble.member`` task
   per member not yet trained, on the ``train`` queue, sent after the commit.
2. Member task k trains a fresh network from ``member_seed(seed, k)`` on the labelled items,
   stores its checkpoint and records ``{k: ...}`` in ``done`` under the row lock. The task that
   completes the set queues ``annoloop.ensemble.join``. Any number of workers train members at
   once; one worker trains them one after another.
3. The join assembles the members into the cycle's model (the mean of their posteriors; its
   checkpoint becomes the cycle's), evaluates it on the test split, and scores: in process,
   or, for a pool larger than the shard size, by handing over to sharded scoring
   (``shards.py``) with the ensemble checkpoint. It opens the queue with a compare-and-set on
   (``scoring``, attempt).

Idempotence and restarts: tasks carry the cycle's attempt and every guard compares it (as in
``shards.py``). A redelivered member task finds its index recorded and trains nothing; a
redelivered join finds the queue open (or the shards dispatched) and stops. A worker restart
on the embedded broker re-runs the cycle as a new attempt (``worker/recovery.py``); members
recorded by the earlier attempt on the same inputs (same labelled items, targets, model and
seed: ``members_key``) are kept, so only the missing ones train again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np

from app.core.enums import CycleState
from app.core.task_names import ENSEMBLE_JOIN, ENSEMBLE_MEMBER
from app.core.tasks import TaskSender
from app.cycles.models import Cycle
from worker.ml.data import LoaderPool
from worker.ml.device import resolve_device
from worker.ml.ensemble import EnsembleModel, empty_ensemble, ensemble_size, member_seed
from worker.ml.evaluation import evaluate
from worker.ml.models import Classifier, build_model
from worker.ml.spec import ModelSpec
from worker.ml.strategies import ScoringContext, Strategy
from worker.pipeline import cancel, shards, transitions
from worker.pipeline.common import (
    SCORE_BATCH,
    dataset_of,
    load_state,
    start_from_pretraining,
    state_bytes,
)
from worker.pipeline.pseudo import train_cycle_network
from worker.pipeline.runtime import Runtime, celery_sender
from worker.pipeline.shard_plan import ScoringPlan, plan_bounds
from worker.pipeline.snapshot import CycleInputs

log = logging.getLogger(__name__)
KEY = "ensemble"


def members_key(inputs: CycleInputs) -> str:
    """Equal keys: member k would train to the same weights (same items, targets, network,
    training settings and seed), so a recorded member can be kept across attempts."""
    digest = hashlib.sha256(np.asarray(inputs.labelled.ids, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(inputs.training_targets(), dtype=np.float64).tobytes())
    digest.update(json.dumps([inputs.model_spec, inputs.seed], sort_keys=True).encode())
    return digest.hexdigest()


def dispatch(
    rt: Runtime,
    inputs: CycleInputs,
    strategy: Strategy,
    budget: int,
    *,
    metrics: dict[str, Any],
    sender: TaskSender | None = None,
) -> bool:
    """Step 1: ``training`` → ``scoring`` and send the member tasks; False if cancelled."""
    m = ensemble_size(strategy)
    plan = ScoringPlan(
        inputs=inputs,
        strategy=inputs.strategy,
        params=dict(inputs.params),
        budget=budget,
        score_batch=SCORE_BATCH,
        checkpoint_sha256="",  # the join stores the ensemble's
        subset=None,
    )
    key = members_key(inputs)
    plan_sha = rt.blobs.put(plan.to_bytes())

    def change(cycle: Cycle) -> list[transitions.Task]:
        earlier = (cycle.metrics or {}).get(KEY) or {}
        kept = {}
        if earlier.get("key") == key:
            kept = {i: d for i, d in earlier.get("done", {}).items() if int(i) < m}
        cycle.metrics = {
            **metrics,
            KEY: {
                "plan_sha256": plan_sha,
                "members": m,
                "key": key,
                "done": kept,
                "kept_from_earlier_attempt": sorted(kept, key=int),
                "dispatched_at": time.time(),  # wall clock: the join runs elsewhere
            },
        }
        cycle.timings = {}
        if len(kept) == m:
            return [ENSEMBLE_JOIN.message([cycle.id, cycle.attempts])]
        return [
            ENSEMBLE_MEMBER.message([cycle.id, cycle.attempts, k])
            for k in range(m)
            if str(k) not in kept
        ]

    return transitions.change_locked(
        rt.factory,
        inputs.cycle_id,
        sender or celery_sender(),
        change,
        expect=CycleState.training,
        to=CycleState.scoring,
    )


def run_member(
    rt: Runtime, cycle_id: int, attempt: int, member: int, *, host: str, sender: TaskSender
) -> str:
    """Step 2 for one member; idempotent (a recorded member is not retrained)."""
    cycle = transitions.scoring_cycle(rt.factory, cycle_id, attempt)
    if cycle is None or KEY not in cycle.metrics:
        return "stale: the cycle is no longer training members for this attempt"
    ens = cycle.metrics[KEY]
    watch = cancel.watch(rt, cycle_id, attempt=attempt, phase=f"training member {member}")
    try:
        if not 0 <= member < int(ens["members"]):
            raise ValueError(f"member {member} is outside an ensemble of {ens['members']}")
        result = ens["done"].get(str(member))
        if result is None:
            result = _train(rt, ens["plan_sha256"], member, host, watch)
        transitions.record_done(
            rt.factory,
            sender,
            cycle_id,
            attempt,
            KEY,
            member,
            result,
            total=int(ens["members"]),
            then=ENSEMBLE_JOIN.message([cycle_id, attempt]),
        )
    except cancel.CycleStopped as stop:
        log.info("cycle %s member %d stopped: %s", cycle_id, member, stop)
        return str(stop)
    except Exception as exc:
        log.exception("cycle %s member %d failed", cycle_id, member)
        transitions.fail(
            rt.factory, cycle_id, f"member {member}: {type(exc).__name__}: {exc}", attempt=attempt
        )
        raise
    return str(result["checkpoint"])


def _train(
    rt: Runtime, plan_sha: str, member: int, host: str, watch: cancel.CycleWatch
) -> dict[str, Any]:
    t0 = time.perf_counter()
    inputs = shards.load_plan(rt, plan_sha).inputs
    spec = ModelSpec.from_dict(inputs.model_spec)
    # As ensemble.train_member: built and trained from member_seed (with CEAL, if asked,
    # each member pseudo-labels with its own predictions).
    seed = member_seed(inputs.seed, member)
    model = build_model(spec, seed=seed)
    start_from_pretraining(rt, model, inputs)
    candidates = LoaderPool(watch.guard(dataset_of(rt, inputs.candidates, spec)), SCORE_BATCH)
    results, pseudo_labels = train_cycle_network(
        rt, inputs, model, seed=seed, candidates=candidates, watch=watch, device=resolve_device()
    )
    log.info("cycle %s member %d trained on %s", inputs.cycle_id, member, host)
    out: dict[str, Any] = {
        "checkpoint": rt.blobs.put(state_bytes(model)),
        "train_loss": results[-1].losses[-1],
        "host": host,
        "seconds": round(time.perf_counter() - t0, 4),
    }
    if pseudo_labels is not None:
        out["pseudo_labels"] = pseudo_labels
    return out


def run_join(rt: Runtime, cycle_id: int, attempt: int, *, sender: TaskSender) -> str:
    """Step 3: the ensemble, its test metrics, the scores and the queue (once per attempt)."""
    cycle = transitions.scoring_cycle(rt.factory, cycle_id, attempt)
    if cycle is None or KEY not in cycle.metrics:
        return "stale: the cycle is no longer scoring this attempt"
    if "sharding" in cycle.metrics:
        return "stale: this attempt's scoring was handed to shard tasks already"
    ens = cycle.metrics[KEY]
    done, m = ens["done"], int(ens["members"])
    if len(done) < m:
        return f"waiting: {len(done)} of {m} members recorded"
    watch = cancel.watch(rt, cycle_id, attempt=attempt, phase="joining the ensemble")
    try:
        return _join(rt, cycle, attempt, sender, watch)
    except cancel.CycleStopped as stop:
        log.info("cycle %s join stopped: %s", cycle_id, stop)
        return str(stop)
    except Exception as exc:
        log.exception("cycle %s ensemble join failed", cycle_id)
        error = f"join: {type(exc).__name__}: {exc}"
        transitions.fail(rt.factory, cycle_id, error, attempt=attempt)
        raise


def _join(
    rt: Runtime, cycle: Cycle, attempt: int, sender: TaskSender, watch: cancel.CycleWatch
) -> str:
    ens = cycle.metrics[KEY]
    done, m = ens["done"], int(ens["members"])
    plan = shards.load_plan(rt, ens["plan_sha256"])
    inputs = plan.inputs
    spec = ModelSpec.from_dict(inputs.model_spec)
    strategy = plan.make_strategy()
    device = resolve_device()
    t0 = time.perf_counter()
    model = empty_ensemble(spec, m)
    for k, member in enumerate(model.members):
        load_state(rt, member, done[str(k)]["checkpoint"])
    checkpoint = rt.blobs.put(state_bytes(model))
    metrics: dict[str, Any] = {
        **cycle.metrics,
        "train_loss": float(np.mean([float(d["train_loss"]) for d in done.values()])),
        "test_unlabelled": inputs.test_unlabelled,
    }
    if len(inputs.test):
        test = LoaderPool(watch.guard(dataset_of(rt, inputs.test, spec)), SCORE_BATCH)
        metrics["test"] = evaluate(model, test, inputs.test_labels, device)
    timings: dict[str, float] = {
        "train_s": sum(float(d["seconds"]) for d in done.values()),
        "members_s": time.time() - float(ens["dispatched_at"]),
        "evaluate_s": time.perf_counter() - t0,
    }

    n = len(inputs.candidates)
    subset = strategy.candidate_indices(n, inputs.seed)
    scored = len(subset) if subset is not None else n
    if plan.budget > 0 and shards.wanted(rt.settings.shard_size, scored):
        scoring = ScoringPlan(
            inputs=inputs,
            strategy=plan.strategy,
            params=plan.params,
            budget=plan.budget,
            score_batch=SCORE_BATCH,
            checkpoint_sha256=checkpoint,
            subset=subset,
            bounds=plan_bounds(scored, SCORE_BATCH, rt.settings.shard_size),
        )
        if not shards.dispatch(
            rt,
            scoring,
            metrics=metrics,
            timings=timings,
            sender=sender,
            expect=CycleState.scoring,
            attempt=attempt,
        ):
            return "stale: the cycle left scoring"
        return f"scoring in {len(scoring.bounds)} shards"

    t0 = time.perf_counter()
    watch.phase = "scoring"
    pool = LoaderPool(watch.guard(dataset_of(rt, inputs.candidates, spec)), SCORE_BATCH)
    labelled = LoaderPool(watch.guard(dataset_of(rt, inputs.labelled, spec)), SCORE_BATCH)
    selection = shards.no_selection(n)
    if plan.budget > 0 and n > 0:
        ctx = ScoringContext(
            model=_as_classifier(model),
            pool=pool,
            labelled=labelled,
            device=device,
            seed=inputs.seed,
            batch_size=SCORE_BATCH,
            ids=np.asarray(inputs.candidates.ids, dtype=np.int64),
        )
        selection = strategy.select(ctx, plan.budget)
    timings["score_s"] = time.perf_counter() - t0
    item_ids = [inputs.candidates.ids[int(i)] for i in selection.indices]
    scores = [shards.finite_or_none(selection.scores[int(i)]) for i in selection.indices]
    metrics.update(
        queued=len(item_ids), strategy_used=plan.strategy, strategy_params=strategy.params
    )
    if not transitions.open_queue(
        rt.factory,
        inputs,
        item_ids,
        scores,
        attempt=attempt,
        checkpoint_sha256=checkpoint,
        scores_sha256=rt.blobs.put(shards.scores_bytes(inputs.candidates, selection)),
        metrics=metrics,
        timings=timings,
        finished_at=None,
    ):
        return "stale: the queue was opened already or the cycle left scoring"
    log.info("cycle %s queued %d items from an ensemble of %d", inputs.cycle_id, len(item_ids), m)
    return f"queued {len(item_ids)} items"


def _as_classifier(model: EnsembleModel) -> Classifier:
    # ScoringContext.model is typed Classifier; the ensemble strategies read its members.
    return model  # type: ignore[return-value]
