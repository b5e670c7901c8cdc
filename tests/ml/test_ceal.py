"""CEAL's pseudo-labels against the paper's Algorithm 1 written out plainly (no official code
exists): threshold schedule, the high-confidence pick, and the two training stages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset

from worker.ml.ceal import confident, fit, options_of, stage_seed, threshold
from worker.ml.data import ArrayDataset, TensorPool, one_hot
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.strategy_params import CealParams, ParamsError, check_params
from worker.ml.training import TrainConfig, train


def test_the_threshold_falls_by_dr_per_cycle_and_stops_at_zero() -> None:
    options = CealParams(delta=0.05, decay=0.01)
    assert [threshold(options, t) for t in range(7)] == pytest.approx(
        [0.05, 0.04, 0.03, 0.02, 0.01, 0.0, 0.0]
    )


def _loop_pick(probs: np.ndarray, delta: float) -> list[tuple[int, int]]:
    """Algorithm 1, step 'high confidence samples': entropy below delta, label = argmax."""
    out = []
    for i, row in enumerate(probs):
        h = -sum(p * math.log(p) for p in row if p > 0)
        if h < delta:
            out.append((i, int(np.argmax(row))))
    return out


def test_the_pick_matches_the_rule_written_out() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(4, 0.05), size=300)
    for delta in (1e-4, 0.01, 0.3):
        got = confident(probs, delta)
        assert list(zip(got.positions.tolist(), got.classes.tolist(), strict=True)) == _loop_pick(
            probs, delta
        )
        assert (got.entropy < delta).all()
    some = confident(probs, 0.3)
    capped = confident(probs, 0.3, max_items=5)
    assert len(capped) == 5
    # The five most confident, reported in position order.
    best = some.positions[np.argsort(some.entropy, kind="stable")[:5]]
    assert capped.positions.tolist() == sorted(best.tolist())


def _world() -> tuple[ModelSpec, ArrayDataset, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(3, 6, generator=g) * 3
    y = torch.arange(12) % 3
    x = centers[y] + torch.randn(12, 6, generator=g)
    pool = centers[torch.arange(90) % 3] + 0.3 * torch.randn(90, 6, generator=g)
    spec = ModelSpec.from_dict(
        {"name": "mlp", "input_shape": [6], "num_classes": 3, "hparams": {"hidden_sizes": [16]}}
    )
    return spec, ArrayDataset(x.numpy(), one_hot(y.numpy(), 3)), pool


def test_fit_is_the_two_stages_of_algorithm_1() -> None:
    spec, labelled, pool_x = _world()
    config = TrainConfig(epochs=8, batch_size=4, lr=0.02)
    options = CealParams(delta=0.2, decay=0.05)
    pool = TensorPool(pool_x, 16)

    def pseudo_dataset(positions: np.ndarray, targets: np.ndarray) -> ArrayDataset:
        return ArrayDataset(pool_x[torch.from_numpy(positions)].numpy(), targets)

    model = build_model(spec, seed=3)
    results, pseudo = fit(
        model,
        labelled,
        config,
        seed=3,
        options=options,
        cycle_index=2,
        candidates=pool,
        pseudo_dataset=pseudo_dataset,
    )
    assert pseudo is not None
    assert pseudo.delta == pytest.approx(0.1)
    assert 0 < len(pseudo) < 90
    assert len(results) == 2

    # The same, plainly: train on D_L; pick D_H with the trained model; fine-tune on both.
    plain = build_model(spec, seed=3)
    train(plain, labelled, config, seed=3)
    with torch.no_grad():
        plain.eval()
        probs = torch.softmax(plain(pool_x), dim=1).numpy()
    picked = _loop_pick(probs, 0.1)
    assert [(int(i), int(c)) for i, c in zip(pseudo.positions, pseudo.classes, strict=True)] == (
        picked
    )
    rows = [i for i, _ in picked]
    d_h = ArrayDataset(pool_x[rows].numpy(), one_hot(np.array([c for _, c in picked]), 3))
    train(plain, ConcatDataset([labelled, d_h]), config.for_finetuning(), seed=stage_seed(3))
    for a, b in zip(model.state_dict().values(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_without_options_or_confident_items_fit_is_plain_training() -> None:
    spec, labelled, pool_x = _world()
    config = TrainConfig(epochs=3, batch_size=4)
    plain = build_model(spec, seed=0)
    train(plain, labelled, config, seed=0)
    for options in (None, CealParams(delta=0.01, decay=0.01)):
        model = build_model(spec, seed=0)
        results, pseudo = fit(
            model,
            labelled,
            config,
            seed=0,
            options=options,
            cycle_index=1,  # delta 0.01 - 0.01 = 0: nothing is below it
            candidates=TensorPool(pool_x, 16),
            pseudo_dataset=lambda p, t: ArrayDataset(pool_x[torch.from_numpy(p)].numpy(), t),
        )
        assert len(results) == 1
        assert pseudo is None if options is None else len(pseudo) == 0  # type: ignore[arg-type]
        for a, b in zip(model.state_dict().values(), plain.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ceal_is_an_option_of_every_acquisition_strategy() -> None:
    checked = check_params("acquire", "margin", {"ceal": {"delta": 0.01}})
    assert checked == {"ceal": {"delta": 0.01, "decay": 0.00033, "max_items": None}}
    assert options_of(checked) == CealParams(delta=0.01)
    assert options_of({}) is None
    assert get_strategy("margin", **checked).params == {"candidates": None}
    both = check_params("acquire", "ensemble_vote_entropy", {"members": 3, "ceal": {}})
    assert both == {"members": 3, "ceal": {"delta": 0.005, "decay": 0.00033, "max_items": None}}
    for bad, key in (
        ({"ceal": {"delta": -1.0}}, "ceal.delta"),
        ({"ceal": {"delta": 0.1, "rate": 1}}, "ceal.rate"),
        ({"ceal": {"max_items": 0}}, "ceal.max_items"),
        ({"ceal": 0.1}, "ceal"),
    ):
        with pytest.raises(ParamsError) as err:
            check_params("acquire", "entropy", bad)
        assert err.value.key == key
    with pytest.raises(ParamsError):
        check_params("clean", "joint", {"ceal": {}})
