"""The mixed queue's ranking (worker/pipeline/mixed.py): one ascending order over relabels and
new items by ActiveLab score, gold items left out, the score artefact sorted by item id."""

from __future__ import annotations

import numpy as np
import pytest

from worker.ml.activelab import activelab_scores
from worker.pipeline.mixed import distinct_pairs, mixed_ranking
from worker.pipeline.snapshot import CycleInputs, ItemRefs


def refs(ids: list[int]) -> ItemRefs:
    out = ItemRefs()
    for i in ids:
        out.append(i, "0" * 64, "image/png")
    return out


def inputs(votes: np.ndarray, labelled: list[int], candidates: list[int]) -> CycleInputs:
    return CycleInputs(
        cycle_id=1, project_id=1, number=1, strategy="activelab", params={}, seed=0,
        batch_size=2, labels_per_item=1, model_spec={}, labels_remaining=None,
        labelled=refs(labelled), counts=np.zeros((len(labelled), 3), np.int64),
        candidates=refs(candidates), test=refs([]), test_labels=np.zeros(0, np.int64),
        labelled_set_hash="", votes=votes,
    )  # fmt: skip


def test_distinct_pairs_moves_repeats_to_new_columns() -> None:
    items = np.array([0, 0, 1, 0, 1])
    annotators = np.array([2, 2, 2, 2, 0])
    out = distinct_pairs(items, annotators)
    assert out.tolist() == [2, 3, 2, 4, 0]
    pairs = set(zip(items.tolist(), out.tolist(), strict=True))
    assert len(pairs) == len(items)


def test_one_ranking_over_relabels_and_new_items() -> None:
    # Labelled ids 10, 20, 30 (row 1 = id 20 is gold: no votes), candidates 5 and 40.
    votes = np.array([[0, 7, 1], [0, 9, 1], [2, 7, 2], [2, 9, 0]])
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 3)
    cand = np.array([[0.34, 0.33, 0.33], [0.98, 0.01, 0.01]])
    got = mixed_ranking(inputs(votes, [10, 20, 30], [5, 40]), probs, cand)
    assert got.labelled_scored == 2
    assert got.new_scored == 2
    # Same numbers as the scoring function on the compacted rows.
    lab, new = activelab_scores(
        np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), votes[:, 2],
        num_annotators=2, probs=probs[[0, 2]], probs_unlabelled=cand,
    )  # fmt: skip
    expected = {10: lab[0], 30: lab[1], 5: new[0], 40: new[1]}
    assert dict(got.ranked) == pytest.approx(expected)
    assert [s for _, s in got.ranked] == sorted(expected.values())
    assert 20 not in dict(got.ranked)
    # The unsure new item comes before the confident one.
    order = [i for i, _ in got.ranked]
    assert order.index(5) < order.index(40)
    assert got.item_ids.tolist() == [5, 10, 30, 40]
    np.testing.assert_allclose(got.probs[0], cand[0])
    np.testing.assert_allclose(got.probs[1], probs[0])


def test_needs_the_votes() -> None:
    bare = inputs(np.zeros((0, 3), np.int64), [], [])
    object.__setattr__(bare, "votes", None)
    with pytest.raises(ValueError, match="votes"):
        mixed_ranking(bare, np.zeros((0, 3)), np.zeros((0, 3)))
