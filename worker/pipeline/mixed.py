"""ActiveLab's mixed queue: relabels and first labels of new items in one ranking.

A cleaning project with the ``activelab`` strategy ranks every labelled pool item (from its
held-out probabilities and who voted what) together with every unlabelled pool item (from the
cycle's full model) by ``worker.ml.activelab.activelab_scores``, lowest first. Each entry asks
for one label; the next re-rank (every ``finetune_every`` labels) decides what comes after,
so the split between new items and relabels follows the expected gain label by label rather
than a fixed budget for each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.ml.activelab import activelab_scores
from worker.pipeline.snapshot import CycleInputs

CANDIDATE_PROBS_KEY = "candidate_probs"  # ScoringPlan.recorded: (U, C) full-model probs


@dataclass(frozen=True)
class MixedRanking:
    ranked: list[tuple[int, float]]  # (item id, ActiveLab score), label first first
    item_ids: np.ndarray  # (L' + U,) ascending: every scored item
    scores: np.ndarray  # (L' + U,) their scores
    probs: np.ndarray  # (L' + U, C) the probabilities that scored them
    labelled_scored: int  # L': labelled items with votes (gold items are never relabelled)
    new_scored: int  # U


def mixed_ranking(
    inputs: CycleInputs, probs: np.ndarray, candidate_probs: np.ndarray
) -> MixedRanking:
    """``probs`` (L, C) of ``inputs.labelled`` (held out, or in-sample with folds 0);
    ``candidate_probs`` (U, C) of ``inputs.candidates`` from the model trained on all."""
    votes = inputs.votes
    if votes is None:
        raise ValueError("the mixed queue needs the cycle's votes (CycleInputs.votes)")
    rows, items = np.unique(votes[:, 0], return_inverse=True)
    _, annotators = np.unique(votes[:, 1], return_inverse=True)
    annotators = distinct_pairs(items.reshape(-1), annotators.reshape(-1))
    labelled, new = activelab_scores(
        items.reshape(-1),
        annotators,
        votes[:, 2],
        num_annotators=int(annotators.max()) + 1 if len(annotators) else 0,
        probs=np.asarray(probs, dtype=np.float64)[rows],
        probs_unlabelled=np.asarray(candidate_probs, dtype=np.float64),
        seed=inputs.seed,
    )
    ids = np.concatenate(
        [
            np.asarray(inputs.labelled.ids, dtype=np.int64)[rows],
            np.asarray(inputs.candidates.ids, dtype=np.int64),
        ]
    )
    scores = np.concatenate([labelled, new])
    scored_probs = np.concatenate([np.asarray(probs)[rows], np.asarray(candidate_probs)])
    first = np.lexsort((ids, scores))  # lowest score first; equal scores by id
    by_id = np.argsort(ids, kind="stable")
    return MixedRanking(
        ranked=[(int(ids[i]), float(scores[i])) for i in first],
        item_ids=ids[by_id],
        scores=scores[by_id],
        probs=scored_probs[by_id],
        labelled_scored=len(rows),
        new_scored=len(candidate_probs),
    )


def distinct_pairs(items: np.ndarray, annotators: np.ndarray) -> np.ndarray:
    """(V,) annotator columns with every (item, annotator) pair once, as ActiveLab's table
    needs: the k-th repeat (k >= 1) of a pair goes to pseudo-annotator A + k - 1. A pair
    repeats only when an importer's label and a later one share an identity."""
    if len(items) == 0:
        return np.asarray(annotators, dtype=np.int64)
    count = int(annotators.max()) + 1
    key = items.astype(np.int64) * count + annotators
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    position = np.arange(len(key))
    repeat_sorted = position - np.maximum.accumulate(np.where(starts, position, 0))
    repeat = np.empty_like(repeat_sorted)
    repeat[order] = repeat_sorted
    return np.where(repeat == 0, annotators, count + repeat - 1).astype(np.int64)
