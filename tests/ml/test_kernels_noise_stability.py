"""Noise-stability deviations: equal to the deep-copy reference, seeded, weights restored."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from tests.ml.test_kernels_nets import BNConvNet, TinyCNN, make_net, make_pool
from worker.ml.kernels import (
    noise_deviations,
    noise_deviations_reference,
    noise_generator,
    sample_noise,
)
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec

K = 4


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: nn.Module, before: dict[str, Tensor]) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("target", ["softmax", "features"])
@pytest.mark.parametrize("cls", [TinyCNN, BNConvNet])
def test_equals_reference_with_the_same_seed(cls: type[nn.Module], target: str) -> None:
    net = make_net(cls).train()
    before = _snapshot(net)
    pool = make_pool(cls.input_shape, 11, seed=1)  # type: ignore[attr-defined]
    kw = {"num_samples": K, "zeta": 1e-3, "seed": 5, "target": target}
    want = noise_deviations_reference(net, pool.split(4), **kw)  # type: ignore[arg-type]
    got = noise_deviations(net, pool.split(4), **kw)  # type: ignore[arg-type]
    width = {"softmax": net.head.out_features, "features": net.head.in_features}[target]
    assert got.shape == (11, K * width)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
    assert got.abs().max() > 0
    _assert_same_state(net, before)
    assert all(m.training for m in net.modules())


def test_hand_computed_deviation() -> None:
    net = make_net(TinyCNN).eval()
    x = make_pool(TinyCNN.input_shape, 3, seed=2)
    noisy = copy.deepcopy(net)
    noise = sample_noise(net, 1e-2, noise_generator(9, 0))
    with torch.no_grad():
        for name, p in noisy.named_parameters():
            if name in noise:
                p.add_(noise[name])
        p_clean, p_noisy = net(x).softmax(1), noisy(x).softmax(1)
    want = (p_noisy - p_clean) / p_clean.norm(dim=1, keepdim=True)
    got = noise_deviations(net, [x], num_samples=1, zeta=1e-2, seed=9)
    torch.testing.assert_close(got, want)


def test_independent_of_batching_and_of_the_weight_cache() -> None:
    net = make_net(BNConvNet)
    pool = make_pool(BNConvNet.input_shape, 12, seed=3)
    whole = noise_deviations(net, [pool], num_samples=K, seed=1)
    split = noise_deviations(net, pool.split(5), num_samples=K, seed=1)
    # cache_bytes=0 redraws every perturbation for every batch: same noise, same numbers.
    redrawn = noise_deviations(net, pool.split(3), num_samples=K, seed=1, cache_bytes=0)
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(redrawn, whole, rtol=1e-4, atol=1e-7)
    # A shard of the pool gets the rows the whole pool gets (same seed, k -> same noise).
    shard = noise_deviations(net, [pool[6:]], num_samples=K, seed=1)
    torch.testing.assert_close(shard, whole[6:], rtol=1e-4, atol=1e-7)


def test_seed_matters_and_k_draws_are_fresh() -> None:
    net = make_net(TinyCNN)
    pool = make_pool(TinyCNN.input_shape, 6, seed=4)
    a = noise_deviations(net, [pool], num_samples=2, seed=1)
    b = noise_deviations(net, [pool], num_samples=2, seed=2)
    assert not torch.allclose(a, b)
    assert not torch.allclose(a[:, :5], a[:, 5:])  # perturbation 1 differs from 0
    assert torch.equal(a, noise_deviations(net, [pool], num_samples=2, seed=1))


def test_noise_scale_and_what_is_perturbed() -> None:
    net = make_net(BNConvNet)
    before = _snapshot(net)
    noise = sample_noise(net, 1e-3, noise_generator(0, 0))
    weights = {n: p for n, p in net.named_parameters() if n.endswith("weight")}
    assert set(noise) == set(weights)  # conv, linear and BN gamma; no bias, no buffer
    assert any(n.startswith("stem.1") for n in noise)  # a BN weight
    for name, n in noise.items():
        assert n.shape == weights[name].shape
        assert n.dtype == weights[name].dtype
        torch.testing.assert_close(n.norm(), 1e-3 * weights[name].norm(), rtol=1e-5, atol=0)
    again = sample_noise(net, 1e-3, noise_generator(0, 0))
    assert all(torch.equal(noise[n], again[n]) for n in noise)
    _assert_same_state(net, before)


def test_weights_restored_after_an_exception() -> None:
    net = make_net(BNConvNet).train()
    before = _snapshot(net)
    pool = make_pool(BNConvNet.input_shape, 4, seed=5)

    def failing() -> Iterator[Tensor]:
        yield pool
        raise RuntimeError("pool read failed")

    with pytest.raises(RuntimeError, match="pool read failed"):
        noise_deviations(net, failing(), num_samples=K, seed=0)
    _assert_same_state(net, before)
    assert all(m.training for m in net.modules())


def test_project_small_cnn() -> None:
    net = build_model(ModelSpec("small_cnn", (1, 28, 28), 10), seed=0)
    pool = make_pool((1, 28, 28), 6, seed=6)
    want = noise_deviations_reference(net, pool.split(4), num_samples=3, seed=3)
    got = noise_deviations(net, pool.split(4), num_samples=3, seed=3)
    assert got.shape == (6, 30)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
