"""Query by committee with deep ensembles: the three scores against slow references (vote and
consensus entropy as modAL's ``disagreement.py`` computes them, transcribed; mutual
information as a per-item loop), and the ensemble model the cycle stores."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from tests.ml.strategy_world import NUM_CLASSES, make_world
from worker.ml.data import ArrayDataset, TensorPool, one_hot
from worker.ml.ensemble import (
    EnsembleModel,
    empty_ensemble,
    member_seed,
    train_ensemble,
    train_member,
)
from worker.ml.evaluation import predict_proba
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.strategies.base import top_b
from worker.ml.strategies.qbc import consensus_entropy, mutual_information, vote_entropy
from worker.ml.training import TrainConfig


def _member_probs(n: int = 60, m: int = 5, c: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(c, 0.7), size=(n, m))
    # Exact ties inside a member (argmax must take the lowest class) and unanimous rows.
    probs[0, :, :] = 1.0 / c
    probs[1, :, :] = np.eye(c)[2]
    probs[2, 0, :] = [0.4, 0.4, 0.2, 0.0]
    return probs


def _modal_vote_entropy(probs: np.ndarray) -> np.ndarray:
    """modAL ``vote_entropy``: each learner votes its predicted class (argmax of its
    probabilities), p_vote = Counter(votes) / n_learners, scipy ``entropy``."""
    n, m, c = probs.shape
    out = np.zeros(n)
    for i in range(n):
        votes = [int(np.argmax(probs[i, j])) for j in range(m)]
        counter = Counter(votes)
        p_vote = np.array([counter[k] / m for k in range(c)])
        out[i] = entropy(p_vote)
    return out


def _modal_consensus_entropy(probs: np.ndarray) -> np.ndarray:
    """modAL ``consensus_entropy``: entropy of the committee's mean ``predict_proba``."""
    return np.transpose(entropy(np.transpose(probs.mean(axis=1))))


def _loop_mutual_information(probs: np.ndarray) -> np.ndarray:
    out = []
    for row in probs:
        mean = row.mean(axis=0)
        h_mean = -sum(p * np.log(p) for p in mean if p > 0)
        mean_h = np.mean([-sum(p * np.log(p) for p in member if p > 0) for member in row])
        out.append(h_mean - mean_h)
    return np.array(out)


def test_vote_entropy_matches_modal() -> None:
    probs = _member_probs()
    np.testing.assert_allclose(vote_entropy(probs), _modal_vote_entropy(probs), atol=1e-12)
    assert vote_entropy(probs)[1] == 0.0  # unanimous
    # All members tie on every class: each votes class 0, so they agree.
    assert vote_entropy(probs)[0] == 0.0


def test_consensus_entropy_matches_modal() -> None:
    probs = _member_probs(seed=1)
    got = consensus_entropy(probs)
    np.testing.assert_allclose(got, _modal_consensus_entropy(probs), atol=1e-12)
    assert got[0] == pytest.approx(np.log(4))


def test_mutual_information_matches_a_loop() -> None:
    probs = _member_probs(seed=2)
    got = mutual_information(probs)
    np.testing.assert_allclose(got, _loop_mutual_information(probs), atol=1e-12)
    assert got[0] == pytest.approx(0.0, abs=1e-12)  # members agree exactly: no information
    assert (got > -1e-12).all()


def _spec() -> ModelSpec:
    return ModelSpec.from_dict(
        {"name": "mlp", "input_shape": [6], "num_classes": 3, "hparams": {"hidden_sizes": [8]}}
    )


def _data(seed: int = 0) -> tuple[ArrayDataset, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return ArrayDataset(x.numpy(), one_hot(y.numpy(), 3)), torch.randn(25, 6, generator=g)


def test_the_ensemble_predicts_its_members_mean() -> None:
    dataset, pool_x = _data()
    config = TrainConfig(epochs=3, batch_size=8)
    ensemble, results = train_ensemble(_spec(), dataset, config, seed=4, members=3)
    assert len(results) == 3
    pool = TensorPool(pool_x, 8)
    mean = np.mean([predict_proba(m, pool).numpy() for m in ensemble.members], axis=0)
    np.testing.assert_allclose(predict_proba(ensemble, pool).numpy(), mean, atol=1e-6)
    # Members start and train from their own seeds: they differ.
    first, second = (predict_proba(m, pool).numpy() for m in ensemble.members[:2])
    assert np.abs(first - second).max() > 1e-3


def test_a_member_depends_only_on_the_seed_and_its_index() -> None:
    """What lets the worker train members as separate tasks, in any order, on any host."""
    dataset, _ = _data()
    config = TrainConfig(epochs=2, batch_size=8)
    big, _ = train_ensemble(_spec(), dataset, config, seed=9, members=4)
    alone, _ = train_member(_spec(), dataset, config, seed=9, member=2)
    for a, b in zip(big.members[2].state_dict().values(), alone.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len({member_seed(9, k) for k in range(20)}) == 20
    assert member_seed(9, 0) != member_seed(10, 0)


def test_an_ensemble_checkpoint_loads_into_an_empty_ensemble() -> None:
    dataset, pool_x = _data()
    ensemble, _ = train_ensemble(_spec(), dataset, TrainConfig(epochs=1), seed=1, members=2)
    restored = empty_ensemble(_spec(), 2)
    restored.load_state_dict(ensemble.state_dict())
    pool = TensorPool(pool_x, 8)
    torch.testing.assert_close(predict_proba(restored, pool), predict_proba(ensemble, pool))


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("ensemble_vote_entropy", _modal_vote_entropy),
        ("ensemble_consensus_entropy", _modal_consensus_entropy),
        ("ensemble_mutual_information", _loop_mutual_information),
    ],
)
def test_strategies_pick_the_top_of_the_reference_scores(name: str, reference: object) -> None:
    strategy = get_strategy(name, members=3)
    world = make_world(strategy)
    model = world.model
    assert isinstance(model, EnsembleModel)
    with torch.no_grad():
        model.eval()
        probs = model.member_probs(world.pool.inputs).numpy()
    assert probs.shape == (len(world.pool), 3, NUM_CLASSES)
    expected = reference(probs)  # type: ignore[operator]
    sel = strategy.select(world.ctx(seed=0), 10)
    # The strategy predicts in batches and the reference in one pass: float32 kernels may
    # differ in the last bits by batch size (seen: 4e-8 on one CPU, 0 on another).
    np.testing.assert_allclose(sel.scores, expected, atol=1e-6)
    assert sel.indices.tolist() == top_b(sel.scores, 10, 0).indices.tolist()
    tenth = np.sort(expected)[::-1][9]
    assert (expected[sel.indices] >= tenth - 1e-6).all()


def test_a_single_model_is_refused_with_the_reason() -> None:
    strategy = get_strategy("ensemble_consensus_entropy", members=2)
    world = make_world(None)
    with pytest.raises(ValueError, match="members of an ensemble"):
        strategy.select(world.ctx(), 5)


def test_members_are_validated() -> None:
    with pytest.raises(ValueError, match="members"):
        get_strategy("ensemble_vote_entropy", members=1)
    with pytest.raises(ValueError, match="members"):
        get_strategy("ensemble_vote_entropy", members=21)
