"""Label aggregation: one label and one class posterior per item from the crowd's votes.

Votes come as three parallel int arrays of length V: ``items`` (positions 0..N-1),
``annotators`` (0..A-1) and ``classes`` (0..C-1). A repeated (item, annotator) pair counts as
two votes. ``aggregate`` returns an ``Aggregate`` with ``label`` (N,) int64, ``posterior``
(N, C) float64, ``tied`` (N,) bool and ``annotator_accuracy`` (A,) float64 or None.

Methods:

- ``majority``: the class with strictly the most votes; a tie stays open (label -1).
  Posterior: vote counts / total.
- ``majority_tiebreak``: as ``majority``, but a tie is broken by ``model_probs`` (the tied
  class with the highest model probability; the lowest index if those are equal too), or,
  without ``model_probs``, by a uniform draw among the tied classes from
  ``np.random.default_rng(seed)`` (the same labels for the same seed and input).
  Posterior: vote counts / total, as ``majority``.
- ``dawid_skene``: EM over one confusion matrix per annotator and class priors (Dawid & Skene
  1979), started from the soft majority vote (counts / total), with additive smoothing
  ``DS_SMOOTHING`` on every confusion and prior count so that an annotator who never saw a
  class still has a proper row. EM stops when no posterior entry moves by ``tol`` or more, or
  after ``max_iter`` iterations (on sparse votes EM is slow: on the music data posteriors
  still move by 1e-3 after 100 iterations and settle after about 1,000). Label: argmax of
  the posterior, the lowest index on an exact tie. Annotator accuracy:
  ``sum_k prior_k * confusion[a, k, k]``.
- ``crowdlab``: CROWDLAB (Goh, Tkachenko & Mueller 2022) as ``cleanlab.multiannotator.
  get_label_quality_multiannotator`` (cleanlab 2.9, ``consensus_method="best_quality"``)
  computes it; needs ``model_probs``, held-out (out-of-fold) model probabilities. The
  posterior is a weighted average of the model's probabilities and, per vote, a likelihood
  vector (the estimated agreement ``p`` on the voted class, ``(1 - p) / (C - 1)`` elsewhere);
  annotator weights come from agreement with the other annotators of the same items, the
  model's weight from its agreement with the majority vote, both relative to the error of
  always answering the most common class. Label: argmax of the posterior built on the
  majority vote (majority ties broken as cleanlab does: model probability, then the rarer
  class, then the better annotators, then a seeded draw); the posterior returned is the one
  rebuilt on that label, as cleanlab's quality scores are, so its argmax can differ from the
  label (18 of the 700 music songs). Annotator accuracy: cleanlab's annotator quality (NaN for
  an annotator none of whose items has a second vote).

Tie rule shared by all methods: ``tied`` is True where an item has votes and its top vote
count is shared by two or more classes, whatever the method then decided. Items with no
votes get label -1, a uniform posterior and ``tied`` False, and take no part in any estimate;
annotators with no votes get a NaN accuracy. ``model_probs`` rows are normalised to sum to 1;
``majority`` and ``dawid_skene`` ignore them.

Only numpy: the API process imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("majority", "majority_tiebreak", "dawid_skene", "crowdlab")

# Pseudo-count added to every confusion-matrix cell and class prior count. Small against one
# vote: at 0.01 the 0.1 pseudo-votes per confusion row outweighed the evidence of annotators
# with a handful of votes and moved EM's fixed point on the music data (accuracy 0.746 vs
# 0.766, agreement with crowd-kit's unsmoothed EM 0.959 vs 0.999, both converged).
DS_SMOOTHING = 1e-3
_CROWDLAB_FLOOR = 1e-6  # cleanlab's CLIPPING_LOWER_BOUND: weights and error rates stay positive


@dataclass(frozen=True)
class Aggregate:
    method: str
    label: np.ndarray  # (N,) int64, -1 where no label is derived
    posterior: np.ndarray  # (N, C) float64, rows sum to 1
    tied: np.ndarray  # (N,) bool: votes present and the top count is shared
    annotator_accuracy: np.ndarray | None  # (A,) float64 estimated P(correct), else None


@dataclass(frozen=True)
class _Votes:
    items: np.ndarray  # (V,) int64
    annotators: np.ndarray  # (V,) int64
    classes: np.ndarray  # (V,) int64
    num_items: int
    num_annotators: int
    num_classes: int
    counts: np.ndarray  # (N, C) float64 votes per item and class
    totals: np.ndarray  # (N,) float64 votes per item
    voted: np.ndarray  # (N,) bool: at least one vote
    leaders: np.ndarray  # (N, C) bool: classes holding the top count of a voted item
    tied: np.ndarray  # (N,) bool


def aggregate(
    method: str,
    items: np.ndarray,
    annotators: np.ndarray,
    classes: np.ndarray,
    *,
    num_items: int,
    num_annotators: int,
    num_classes: int,
    model_probs: np.ndarray | None = None,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Aggregate:
    """One label and posterior per item from the votes; see the module docstring."""
    if method not in METHODS:
        raise ValueError(f"unknown aggregation method {method!r}; expected one of {METHODS}")
    votes = _votes(items, annotators, classes, num_items, num_annotators, num_classes)
    probs = None if model_probs is None else _model_probs(model_probs, num_items, num_classes)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")

    if method == "majority":
        return _majority(votes)
    if method == "majority_tiebreak":
        return _majority_tiebreak(votes, probs, seed)
    if method == "dawid_skene":
        return _dawid_skene(votes, max_iter, tol)
    if probs is None:
        raise ValueError(
            "crowdlab needs model_probs: held-out (out-of-fold) class probabilities of a "
            "model, shape (num_items, num_classes)"
        )
    return _crowdlab(votes, probs, seed)


def _as_index(name: str, values: np.ndarray, bound: int, bound_name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= bound:
        raise ValueError(
            f"{name} must lie in 0..{bound_name}-1 = 0..{bound - 1}, got {low}..{high}"
        )
    return array.astype(np.int64, copy=False)


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _votes(
    items: np.ndarray,
    annotators: np.ndarray,
    classes: np.ndarray,
    num_items: int,
    num_annotators: int,
    num_classes: int,
) -> _Votes:
    n = _count("num_items", num_items, 0)
    a = _count("num_annotators", num_annotators, 0)
    c = _count("num_classes", num_classes, 1)
    it = _as_index("items", items, n, "num_items")
    an = _as_index("annotators", annotators, a, "num_annotators")
    cl = _as_index("classes", classes, c, "num_classes")
    if not it.shape == an.shape == cl.shape:
        raise ValueError(
            "items, annotators and classes must have the same length, got "
            f"{it.shape[0]}, {an.shape[0]} and {cl.shape[0]}"
        )
    counts = np.bincount(it * c + cl, minlength=n * c).reshape(n, c).astype(np.float64)
    totals = counts.sum(axis=1)
    voted = totals > 0
    leaders = (counts == counts.max(axis=1, initial=0.0)[:, None]) & voted[:, None]
    tied = leaders.sum(axis=1) > 1
    return _Votes(it, an, cl, n, a, c, counts, totals, voted, leaders, tied)


def _model_probs(model_probs: np.ndarray, num_items: int, num_classes: int) -> np.ndarray:
    probs = np.asarray(model_probs, dtype=np.float64)
    if probs.shape != (num_items, num_classes):
        raise ValueError(
            f"model_probs must have shape (num_items, num_classes) = ({num_items}, "
            f"{num_classes}), got {probs.shape}"
        )
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("model_probs must be finite and non-negative")
    sums = probs.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        raise ValueError("every row of model_probs needs a positive sum")
    return probs / sums


def _vote_share(votes: _Votes) -> np.ndarray:
    posterior = np.full((votes.num_items, votes.num_classes), 1.0 / votes.num_classes)
    posterior[votes.voted] = votes.counts[votes.voted] / votes.totals[votes.voted, None]
    return posterior


def _majority(votes: _Votes) -> Aggregate:
    decided = votes.voted & ~votes.tied
    label = np.where(decided, votes.counts.argmax(axis=1), -1).astype(np.int64)
    return Aggregate("majority", label, _vote_share(votes), votes.tied.copy(), None)


def _majority_tiebreak(votes: _Votes, probs: np.ndarray | None, seed: int) -> Aggregate:
    label = np.where(votes.voted, votes.counts.argmax(axis=1), -1).astype(np.int64)
    rows = np.flatnonzero(votes.tied)
    if rows.size:
        if probs is not None:
            score = probs[rows]
        else:
            # One uniform key per (tied item, class), drawn in item order: the argmax over the
            # tied classes is a uniform choice, reproducible from the seed alone.
            score = np.random.default_rng(seed).random((rows.size, votes.num_classes))
        label[rows] = np.where(votes.leaders[rows], score, -np.inf).argmax(axis=1)
    return Aggregate("majority_tiebreak", label, _vote_share(votes), votes.tied.copy(), None)


def _class_sums(index: np.ndarray, table: np.ndarray, lookup: np.ndarray, size: int) -> np.ndarray:
    """``out[k, j] = sum of table[k, lookup[v]] over the votes v with index[v] == j``.

    One gather and one bincount per class on contiguous rows: at 10^5 votes and 10 classes
    this measured faster than ``np.add.at`` or ``np.add.reduceat`` on (V, C) blocks.
    """
    out = np.empty((table.shape[0], size))
    for k, row in enumerate(table):
        out[k] = np.bincount(index, weights=row.take(lookup), minlength=size)
    return out


def _dawid_skene(votes: _Votes, max_iter: int, tol: float) -> Aggregate:
    a, c = votes.num_annotators, votes.num_classes
    # EM runs on the voted items only, renumbered 0..M-1: an item without votes carries no
    # evidence, and counting it in the class priors would only pull them towards themselves.
    voted = np.flatnonzero(votes.voted)
    item = (np.cumsum(votes.voted) - 1)[votes.items]
    # (annotator, given class) -> a * C + given: the confusion counts of true class k are the
    # row k of a (C, A * C) table, filled by one bincount per true class.
    pair = votes.annotators * c + votes.classes
    soft = (votes.counts[voted] / votes.totals[voted, None]).T.copy()  # (C, M), rows = true
    prior = np.full(c, 1.0 / c)
    confusion = np.full((c, a, c), 1.0 / c)  # [true, annotator, given]
    for _ in range(max_iter):
        given = _class_sums(pair, soft, item, a * c).reshape(c, a, c) + DS_SMOOTHING
        confusion = given / given.sum(axis=2, keepdims=True)
        prior_counts = soft.sum(axis=1) + DS_SMOOTHING
        prior = prior_counts / prior_counts.sum()
        # In logs: an item with many votes multiplies many small probabilities.
        log_confusion = np.log(confusion).reshape(c, a * c)
        log_joint = _class_sums(item, log_confusion, pair, voted.size)
        log_joint += np.log(prior)[:, None]
        log_joint -= log_joint.max(axis=0, initial=-np.inf)
        joint = np.exp(log_joint)
        updated = joint / joint.sum(axis=0)
        change = float(np.abs(updated - soft).max(initial=0.0))
        soft = updated
        if change < tol:
            break
    posterior = np.full((votes.num_items, c), 1.0 / c)
    posterior[voted] = soft.T
    label = np.full(votes.num_items, -1, dtype=np.int64)
    label[voted] = soft.argmax(axis=0)
    accuracy = np.einsum("k,kak->a", prior, confusion)
    active = np.bincount(votes.annotators, minlength=a) > 0
    accuracy = np.where(active, accuracy, np.nan)
    return Aggregate("dawid_skene", label, posterior, votes.tied.copy(), accuracy)


def _narrow(candidates: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Keep, per row, the candidates with the highest score (all of them on an exact tie)."""
    masked = np.where(candidates, score, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    return candidates & (masked == best)


def _crowdlab_majority(votes: _Votes, probs: np.ndarray, seed: int) -> np.ndarray:
    """cleanlab's ``get_majority_vote_label``: each tie-break stage runs on what is left tied."""
    c = votes.num_classes
    candidates = votes.leaders.copy()
    candidates = _narrow(candidates, probs)
    # The rarer class overall, so that ties do not feed the majority class.
    frequency = votes.counts.sum(axis=0)
    candidates = _narrow(candidates, np.broadcast_to(-frequency, candidates.shape))
    open_rows = candidates.sum(axis=1) > 1
    if open_rows.any():
        # The tied class whose voters agree more often with the untied majority votes.
        untied = votes.voted & ~votes.tied
        on_untied = untied[votes.items]
        agree = votes.classes == votes.counts.argmax(axis=1)[votes.items]
        hits = np.bincount(votes.annotators[on_untied], agree[on_untied], votes.num_annotators)
        seen = np.bincount(votes.annotators[on_untied], minlength=votes.num_annotators)
        quality = np.full(votes.num_annotators, np.nan)
        quality[seen > 0] = hits[seen > 0] / seen[seen > 0]
        if np.isfinite(quality).any():
            quality[~np.isfinite(quality)] = np.nanmean(quality)
            sums = np.bincount(
                votes.items * c + votes.classes,
                weights=quality[votes.annotators],
                minlength=votes.num_items * c,
            ).reshape(-1, c)
            mean_quality = np.divide(
                sums, votes.counts, out=np.zeros_like(sums), where=votes.counts > 0
            )
            candidates[open_rows] = _narrow(candidates[open_rows], mean_quality[open_rows])
    open_rows = np.flatnonzero(candidates.sum(axis=1) > 1)
    if open_rows.size:
        keys = np.random.default_rng(seed).random((open_rows.size, c))
        candidates[open_rows] = _narrow(candidates[open_rows], keys)
    return candidates.argmax(axis=1)


@dataclass(frozen=True)
class _CrowdlabFit:
    posterior: np.ndarray  # (N, C) for voted items; rows of unvoted items are meaningless
    model_weight: float
    annotator_weight: np.ndarray  # (A,), NaN for annotators without votes


def _crowdlab_fit(
    votes: _Votes, probs: np.ndarray, consensus: np.ndarray, peer_agreement: np.ndarray
) -> _CrowdlabFit:
    c = votes.num_classes
    multi = votes.totals >= 2
    rows = np.arange(votes.num_items)
    agreement = np.divide(
        votes.counts[rows, consensus],
        votes.totals,
        out=np.zeros(votes.num_items),
        where=votes.voted,
    )
    p_agree = float(agreement[multi].mean())
    p_other = (1.0 - p_agree) / (c - 1)
    # The baseline error: always answering the most common consensus class.
    multi_consensus = consensus[multi]
    common = np.bincount(multi_consensus, minlength=c).argmax()
    baseline_error = max(float(np.mean(multi_consensus != common)), _CROWDLAB_FLOOR)
    annotator_weight = np.maximum(1.0 - (1.0 - peer_agreement) / baseline_error, _CROWDLAB_FLOOR)
    model_error = float(np.mean(probs[multi].argmax(axis=1) != multi_consensus))
    model_weight = max(1.0 - model_error / baseline_error, _CROWDLAB_FLOOR) * np.sqrt(
        votes.totals[votes.voted].mean()
    )
    vote_weight = annotator_weight[votes.annotators]
    weight_sum = np.bincount(votes.items, vote_weight, votes.num_items)
    on_class = np.bincount(
        votes.items * c + votes.classes, vote_weight, votes.num_items * c
    ).reshape(-1, c)
    numerator = (
        model_weight * probs + p_other * weight_sum[:, None] + (p_agree - p_other) * on_class
    )
    posterior = numerator / (model_weight + weight_sum)[:, None]
    return _CrowdlabFit(posterior, float(model_weight), annotator_weight)


@dataclass(frozen=True)
class CrowdlabConsensus:
    """CROWDLAB's consensus and the weights behind it (what ActiveLab scores build on)."""

    label: np.ndarray  # (N,) int64 consensus, -1 for items without votes
    posterior: np.ndarray  # (N, C) posterior rebuilt on ``label``; uniform without votes
    model_weight: float
    annotator_weight: np.ndarray  # (A,) NaN for annotators without votes


def crowdlab_consensus(
    items: np.ndarray,
    annotators: np.ndarray,
    classes: np.ndarray,
    *,
    num_items: int,
    num_annotators: int,
    num_classes: int,
    model_probs: np.ndarray,
    seed: int = 0,
) -> CrowdlabConsensus:
    """``aggregate("crowdlab", ...)``'s consensus with its model and annotator weights."""
    votes = _votes(items, annotators, classes, num_items, num_annotators, num_classes)
    probs = _model_probs(model_probs, num_items, num_classes)
    consensus, final, active = _crowdlab_consensus(votes, probs, seed)
    posterior = np.full((num_items, num_classes), 1.0 / num_classes)
    posterior[votes.voted] = final.posterior[votes.voted]
    weights = np.where(active, final.annotator_weight, np.nan)
    return CrowdlabConsensus(
        np.where(votes.voted, consensus, -1).astype(np.int64),
        posterior,
        final.model_weight,
        weights,
    )


def _crowdlab_consensus(
    votes: _Votes, probs: np.ndarray, seed: int
) -> tuple[np.ndarray, _CrowdlabFit, np.ndarray]:
    """(consensus, the fit rebuilt on it, which annotators voted)."""
    n, a, c = votes.num_items, votes.num_annotators, votes.num_classes
    if c < 2:
        raise ValueError("crowdlab needs num_classes >= 2")
    multi = votes.totals >= 2
    if not multi.any():
        raise ValueError(
            "crowdlab needs at least one item with two or more votes: annotator quality is "
            "estimated from agreement between annotators"
        )
    # Agreement with the other votes on the same item, pooled over the annotator's items and
    # weighted by how many other votes each item has.
    others = votes.totals[votes.items] - 1
    agreeing = votes.counts[votes.items, votes.classes] - 1
    pooled = np.bincount(votes.annotators, agreeing, a)
    pooled_weight = np.bincount(votes.annotators, others, a)
    active = np.bincount(votes.annotators, minlength=a) > 0
    peer_agreement = np.full(a, np.nan)
    overlap = pooled_weight > 0
    peer_agreement[overlap] = pooled[overlap] / pooled_weight[overlap]
    # An annotator who shares no item with anyone gets the average of the others.
    peer_agreement[active & ~overlap] = peer_agreement[overlap].mean()

    majority = _crowdlab_majority(votes, probs, seed)
    first = _crowdlab_fit(votes, probs, majority, peer_agreement)
    best = _narrow(np.ones((n, c), dtype=bool), first.posterior)
    consensus = np.where(best.sum(axis=1) == 1, best.argmax(axis=1), majority)
    final = _crowdlab_fit(votes, probs, consensus, peer_agreement)
    return consensus, final, active


def _crowdlab(votes: _Votes, probs: np.ndarray, seed: int) -> Aggregate:
    n, a, c = votes.num_items, votes.num_annotators, votes.num_classes
    consensus, final, active = _crowdlab_consensus(votes, probs, seed)
    multi = votes.totals >= 2

    # Annotator quality: the posterior's mean support for the annotator's labels, blended with
    # agreement with the consensus on shared items, by the model's share of the total weight.
    support = np.bincount(
        votes.annotators, final.posterior[votes.items, votes.classes], a
    ) / np.maximum(np.bincount(votes.annotators, minlength=a), 1)
    shared = multi[votes.items]
    hits = np.bincount(
        votes.annotators[shared], votes.classes[shared] == consensus[votes.items[shared]], a
    )
    seen = np.bincount(votes.annotators[shared], minlength=a)
    consensus_agreement = np.full(a, np.nan)
    consensus_agreement[seen > 0] = hits[seen > 0] / seen[seen > 0]
    annotator_total = final.annotator_weight[active].sum() * votes.totals[votes.voted].mean()
    annotator_total /= active.sum()
    share = final.model_weight / (final.model_weight + annotator_total)
    quality = share * support + (1.0 - share) * consensus_agreement
    quality[~active] = np.nan

    posterior = np.full((n, c), 1.0 / c)
    posterior[votes.voted] = final.posterior[votes.voted]
    label = np.where(votes.voted, consensus, -1).astype(np.int64)
    return Aggregate("crowdlab", label, posterior, votes.tied.copy(), quality)
