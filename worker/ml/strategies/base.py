"""The acquisition-strategy interface shared by every strategy.

A strategy is split in two so large pools can be scored in parallel:

``compute(ctx)``
    pointwise work over the candidate pool (posteriors, features, MC-dropout, gradients ...).
    Every returned array has first dimension N in pool order. SHARDABLE: running it on
    contiguous shards of the pool (each a multiple of the pool's batch size, except the last;
    ``ctx.offset`` = global position of the shard's first item) and concatenating along axis 0
    (``merge_shards``) equals running it on the whole pool, bit-for-bit on the CPU.
``choose(arrays, budget, seed, labelled_arrays, ids=...)``
    the batch-aware part (top-B, k-center, k-means++), run once on the merged arrays.
    Deterministic given its inputs. The default is top-B of ``arrays["scores"]``, exactly equal
    scores ordered by a seeded hash of (seed, item id) (``tie_keys``), never by pool position.

A score-based strategy only implements ``score(ctx) -> (N,)`` (higher = more wanted), as a
heuristic does in baal: the default ``compute`` returns ``{"scores": score(ctx)}`` and the
default ``choose`` takes the top B.

Candidate subsetting (common parameter ``candidates``): when set, the pipeline first calls
``candidate_indices(N, seed)`` -> sorted positions of a seeded random subset, builds the
candidate pool from them, runs ``compute``/``choose`` on that subset (positions and shards are
relative to the subset), and maps ``selection.indices`` back through the candidate array.
``select`` does all of this in one process.
"""

from __future__ import annotations

import inspect
from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from worker.ml.data import PoolSource
from worker.ml.evaluation import predict_features_and_proba
from worker.ml.models import Classifier
from worker.ml.strategies.positional_rng import positional_uniform64

Arrays = dict[str, np.ndarray]


@dataclass
class Selection:
    """Result of ``choose``.

    ``indices``: (B,) int64 positions into the candidate pool, in pick order, distinct.
    ``scores``: (N,) float64 per-candidate score, higher = more wanted. For greedy diversity
    methods: the min-distance at the moment each item was picked, and the final min-distance of
    unpicked items. After ``select`` with ``candidates``, positions refer to the full pool and
    items outside the candidate subset score NaN.
    """

    indices: np.ndarray
    scores: np.ndarray


@dataclass
class ScoringContext:
    """Everything ``compute`` may read.

    ``pool``: the candidate pool (or one shard of it), batches in pool order.
    ``labelled``: the labelled items' inputs (coreset/BADGE only), or None.
    ``batch_size``: batch size of ``pool``'s batches; shards start at multiples of it.
    ``offset``: global position of ``pool``'s first item (0 unless this is a shard).
    ``recorded``: arrays a strategy recorded during training (``Strategy.training_arrays``),
    sliced by the caller to the rows of this shard; None when there are none.
    ``ids``: (len(pool),) int64 stable item ids of the whole pool's rows (the database ids in
    the service), read by ``select`` to break ties; None = positions stand in for them.
    ``labelled_targets``: (len(labelled), C) soft targets the model trained on, for strategies
    that fit something of their own to the labels (suggestive annotation); None if not given.
    """

    model: Classifier
    pool: PoolSource
    labelled: PoolSource | None
    device: torch.device
    seed: int
    batch_size: int
    offset: int = 0
    recorded: Mapping[str, np.ndarray] | None = None
    ids: np.ndarray | None = None
    labelled_targets: np.ndarray | None = None


class Strategy(ABC):
    """Base class; subclasses set ``name``/``paper`` and implement ``score`` (a top-B
    strategy) or ``compute`` and ``choose`` (anything batch-aware).

    Constructor keyword arguments are the strategy's parameters (the registry validates names
    against the signature); ``params`` reads them back for storing with a cycle.
    """

    name: ClassVar[str]
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # True when choose() uses labelled_arrays, so compute_labelled must run.
    needs_labelled: ClassVar[bool] = False

    def __init__(self, *, candidates: int | None = None) -> None:
        if candidates is not None and (
            not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1
        ):
            raise ValueError(f"candidates must be None or an int >= 1, got {candidates!r}")
        self.candidates = candidates

    @property
    def params(self) -> dict[str, Any]:
        """The constructor parameters of this instance (JSON-able)."""
        return {p: getattr(self, p) for p in param_names(type(self))}

    @property
    def runs_cold(self) -> bool:
        """True if the strategy can pick with no labelled item and an untrained model (it reads
        the inputs only); otherwise a cold start picks at random."""
        return False

    def candidate_indices(self, n: int, seed: int) -> np.ndarray | None:
        """Sorted (M,) int64 positions of the seeded candidate subset, or None for all N."""
        if self.candidates is None or self.candidates >= n:
            return None
        rng = np.random.default_rng([seed, 0x43414E44])  # separate stream from choose()
        return np.sort(rng.choice(n, size=self.candidates, replace=False)).astype(np.int64)

    def epoch_callback(self, pool: PoolSource) -> Callable[[int, nn.Module], None] | None:
        """A callback for ``train(epoch_callback=...)`` over the candidate pool, or None."""
        return None

    def training_arrays(self) -> Arrays:
        """Arrays (first dim N) recorded by ``epoch_callback`` during training; default none.

        The pipeline stores them and passes each shard's rows as ``ScoringContext.recorded``.
        """
        return {}

    def score(self, ctx: ScoringContext) -> np.ndarray:
        """(len(ctx.pool),) scores, higher = more wanted; pointwise, so shardable."""
        raise NotImplementedError(f"{type(self).__name__} implements neither score nor compute")

    def compute(self, ctx: ScoringContext) -> Arrays:
        """Pointwise arrays over ``ctx.pool``, each with first dim len(ctx.pool). Shardable."""
        scores = np.asarray(self.score(ctx), dtype=np.float64).reshape(-1)
        if scores.shape != (len(ctx.pool),):
            raise ValueError(f"{self.name} scored {scores.shape[0]} of {len(ctx.pool)} items")
        return {"scores": scores}

    def compute_labelled(self, ctx: ScoringContext) -> Arrays:
        """Arrays over ``ctx.labelled`` that ``choose`` needs; default none."""
        return {}

    def choose(
        self,
        arrays: Mapping[str, np.ndarray],
        budget: int,
        seed: int,
        labelled_arrays: Mapping[str, np.ndarray] | None = None,
        ids: np.ndarray | None = None,
    ) -> Selection:
        """Pick min(budget, N) distinct positions from the merged ``compute`` arrays.

        ``ids``: (N,) stable item ids of the rows, keys of the tie-break (None = positions).
        Default: the ``budget`` highest ``arrays["scores"]``.
        """
        pool_size(arrays)
        return top_b(arrays["scores"], budget, seed, ids)

    def select(self, ctx: ScoringContext, budget: int) -> Selection:
        """``choose(compute(ctx), budget, ctx.seed, compute_labelled(ctx))`` on one host.

        Applies candidate subsetting (needs a pool with ``subset``, such as ``LoaderPool``) and
        returns positions into the full pool.
        """
        n = len(ctx.pool)
        cand = self.candidate_indices(n, ctx.seed)
        ids = np.arange(n, dtype=np.int64) if ctx.ids is None else np.asarray(ctx.ids, np.int64)
        if ids.shape != (n,):
            raise ValueError(f"ScoringContext.ids has shape {ids.shape}, want ({n},)")
        sub_ctx = ctx
        if cand is not None:
            subset = getattr(ctx.pool, "subset", None)
            if subset is None:
                raise ValueError(
                    "candidate subsetting needs a pool with .subset(indices), e.g. LoaderPool"
                )
            sub_ctx = _replace(
                ctx, pool=subset(cand), offset=0, recorded=_recorded_for(ctx, self, n, cand)
            )
        labelled = self.compute_labelled(ctx) if self.needs_labelled else None
        sub_ids = ids if cand is None else ids[cand]
        sel = self.choose(self.compute(sub_ctx), budget, ctx.seed, labelled, sub_ids)
        if cand is None:
            return sel
        scores = np.full(n, np.nan)
        scores[cand] = sel.scores
        return Selection(indices=cand[sel.indices], scores=scores)


def _recorded_for(
    ctx: ScoringContext, strategy: Strategy, n: int, cand: np.ndarray
) -> dict[str, np.ndarray] | None:
    """Training-time arrays restricted to the candidates.

    They may have been recorded over the whole pool (N rows: take the candidate rows) or, as
    the sharded path does it, over the candidate pool already (len(cand) rows: keep them).
    """
    recorded = dict(ctx.recorded) if ctx.recorded is not None else strategy.training_arrays()
    out = {}
    for key, value in recorded.items():
        arr = np.asarray(value)
        if len(arr) == n:
            out[key] = arr[cand]
        elif len(arr) == len(cand):
            out[key] = arr
        else:
            raise ValueError(
                f"recorded array {key!r} has {len(arr)} rows; expected {n} (pool) "
                f"or {len(cand)} (candidates)"
            )
    return out or None


def _replace(ctx: ScoringContext, **changes: Any) -> ScoringContext:
    fields = {k: getattr(ctx, k) for k in ctx.__dataclass_fields__}
    fields.update(changes)
    return ScoringContext(**fields)


def param_names(cls: type[Strategy]) -> list[str]:
    """Keyword parameters of a strategy's constructor, in signature order."""
    return list(param_defaults(cls))


def param_defaults(cls: type[Strategy]) -> dict[str, Any]:
    """Parameter name -> default value."""
    sig = inspect.signature(cls.__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name != "self" and p.kind.name != "VAR_KEYWORD"
    }


class PenultimateFeatures(Strategy):
    """A strategy whose arrays are the model's penultimate features.

    compute -> {"features": (N, F) float32}; compute_labelled -> {"features": (M, F)}, or {}
    when nothing is labelled (the choice then starts from no centers).
    """

    def compute(self, ctx: ScoringContext) -> Arrays:
        feats, _ = predict_features_and_proba(ctx.model, ctx.pool, ctx.device)
        return {"features": feats.numpy()}

    def compute_labelled(self, ctx: ScoringContext) -> Arrays:
        if ctx.labelled is None or len(ctx.labelled) == 0:
            return {}
        feats, _ = predict_features_and_proba(ctx.model, ctx.labelled, ctx.device)
        return {"features": feats.numpy()}


def merge_shards(parts: Sequence[Mapping[str, np.ndarray]]) -> Arrays:
    """Concatenate per-shard ``compute`` results (in shard order) along axis 0."""
    if not parts:
        return {}
    keys = set(parts[0])
    for p in parts[1:]:
        if set(p) != keys:
            raise ValueError(f"shards disagree on array names: {sorted(keys)} vs {sorted(p)}")
    return {k: np.concatenate([np.asarray(p[k]) for p in parts], axis=0) for k in parts[0]}


def pool_size(arrays: Mapping[str, np.ndarray]) -> int:
    """N of a dict of pointwise arrays (all must agree)."""
    sizes = {int(np.asarray(a).shape[0]) for a in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"arrays need one common first dimension, got sizes {sorted(sizes)}")
    return sizes.pop()


def check_ints(minimum: int = 1, **values: object) -> None:
    """Each keyword must be a plain int (not a bool) >= ``minimum``; the error names it."""
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{key} must be an int >= {minimum}, got {value!r}")


def check_budget(budget: int) -> None:
    if not isinstance(budget, int | np.integer) or isinstance(budget, bool) or budget < 0:
        raise ValueError(f"budget must be an int >= 0, got {budget!r}")


_TIE_STREAM = 0x54494553  # "TIES": a stream of its own, apart from random's scores


def tie_keys(seed: int, ids: np.ndarray) -> np.ndarray:
    """(N,) float64 in [0, 1): a hash of (seed, item id), the order among equal scores.

    A function of the item, not of where it sits: the same item keeps its key whatever the
    pool's order, subset or sharding, and no item is favoured for being imported first.
    """
    keys = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
    return positional_uniform64(seed, keys, stream=_TIE_STREAM).numpy()


def top_b(
    scores: np.ndarray, budget: int, seed: int = 0, ids: np.ndarray | None = None
) -> Selection:
    """The ``budget`` highest scores, best first; NaN ranks last.

    Exactly equal scores (NaN among them) go in the order of ``tie_keys(seed, ids)``
    (``ids`` None: positions are the ids), and equal keys, which 48 hashed bits make rare, by
    position, so the order is total.
    """
    check_budget(budget)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(scores)
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"ids has shape {ids.shape}, want ({n},)")
    nan = np.isnan(scores)
    primary = np.where(nan, 0.0, -scores)
    # lexsort: the last key sorts first.
    order = np.lexsort((np.arange(n), tie_keys(seed, ids), primary, nan))
    return finalise(order[: min(int(budget), n)], scores)


def finalise(indices: np.ndarray | Sequence[int], scores: np.ndarray) -> Selection:
    """Build a Selection, checking the indices are distinct and in range."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(scores)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise AssertionError(f"selection index out of range [0, {n})")
    if np.unique(idx).size != idx.size:
        raise AssertionError("selection contains duplicate indices")
    return Selection(indices=idx, scores=np.asarray(scores, dtype=np.float64).reshape(-1))
