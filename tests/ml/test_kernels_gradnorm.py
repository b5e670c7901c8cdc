"""Batched gradient norms equal the one-sample reference loop and leave the model alone."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.ml.test_kernels_nets import (
    NETS,
    BNConvNet,
    InPlaceNet,
    MixedNet,
    ScaledNet,
    TinyCNN,
    TwiceNet,
    make_net,
    make_pool,
)
from worker.ml.kernels import gradnorm as gradnorm_module
from worker.ml.kernels import gradnorm_scores, gradnorm_scores_reference
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec

SCHEMES = ["expected", "entropy"]


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: nn.Module, before: dict[str, Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def _rel_err(got: Tensor, want: Tensor) -> float:
    return float(((got - want).abs() / want.abs().clamp_min(1e-12)).max())


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("cls", NETS)
def test_batched_equals_one_sample_loop(cls: type[nn.Module], scheme: str) -> None:
    net = make_net(cls).train()
    pool = make_pool(cls.input_shape, 13, seed=1)  # type: ignore[attr-defined]
    batches = list(pool.split(5))  # uneven last batch on purpose
    layers = gradnorm_module._hookable_layers(net)
    assert layers is not None  # these nets take the per-layer hook path
    want = gradnorm_scores_reference(net, batches, scheme)  # type: ignore[arg-type]
    got = gradnorm_scores(net, batches, scheme)  # type: ignore[arg-type]
    assert got.shape == (13,)
    assert _rel_err(got, want) <= 1e-4
    assert net.training  # modes restored


@pytest.mark.parametrize("cls", [ScaledNet, TwiceNet])
def test_generic_path_for_models_the_hooks_cannot_take(cls: type[nn.Module]) -> None:
    net = make_net(cls)
    if cls is ScaledNet:
        assert gradnorm_module._hookable_layers(net) is None
    pool = make_pool(cls.input_shape, 9, seed=2)  # type: ignore[attr-defined]
    # torch.func handles both (no silent fall-through to the loop).
    want = gradnorm_scores_reference(net, [pool], "entropy")  # type: ignore[arg-type]
    assert _rel_err(gradnorm_module._func_scores(net.eval(), pool, "entropy"), want) <= 1e-4
    for scheme in SCHEMES:
        want = gradnorm_scores_reference(net, pool.split(4), scheme)  # type: ignore[arg-type]
        got = gradnorm_scores(net, pool.split(4), scheme)  # type: ignore[arg-type]
        assert _rel_err(got, want) <= 1e-4


def test_layers_whose_recorded_tensors_change_in_place_are_copied() -> None:
    net = make_net(InPlaceNet)
    pool = make_pool(InPlaceNet.input_shape, 7, seed=8)
    cloned: set[int] = set()
    layers = gradnorm_module._hookable_layers(net)
    assert layers is not None
    got = gradnorm_module._hook_batch(net.eval(), layers, pool, "expected", cloned)
    # fc2's input was changed; fc1's output too, with no recorded layer upstream of it to drive
    # the backward pass to its tensor hook: both are copied on the second try.
    assert cloned == {id(net.fc1), id(net.fc2)}
    want = gradnorm_scores_reference(net, [pool], "expected")
    assert _rel_err(got, want) <= 1e-4


def test_parameters_grads_and_buffers_untouched() -> None:
    net = make_net(BNConvNet).train()
    marker = torch.full_like(net.head.weight, 7.0)
    net.head.weight.grad = marker.clone()
    before = _snapshot(net)
    gradnorm_scores(net, make_pool(BNConvNet.input_shape, 6).split(4), "expected")
    _assert_same_state(net, before)
    assert torch.equal(net.head.weight.grad, marker)
    assert all(p.grad is None for n, p in net.named_parameters() if n != "head.weight")
    assert all(m.training for m in net.modules())


def test_frozen_parameters_are_left_out_like_the_reference() -> None:
    net = make_net(TinyCNN)
    for p in net.body[0].parameters():
        p.requires_grad_(False)
    pool = make_pool(TinyCNN.input_shape, 6, seed=3)
    want = gradnorm_scores_reference(net, [pool], "entropy")
    got = gradnorm_scores(net, [pool], "entropy")
    assert _rel_err(got, want) <= 1e-4


def test_pool_split_does_not_matter_and_unknown_scheme_fails() -> None:
    net = make_net(MixedNet)
    pool = make_pool(MixedNet.input_shape, 10, seed=4)
    a = gradnorm_scores(net, [pool], "expected")
    b = gradnorm_scores(net, pool.split(3), "expected")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=0)
    assert gradnorm_scores(net, [], "expected").shape == (0,)
    with pytest.raises(ValueError, match="scheme"):
        gradnorm_scores(net, [pool], "margin")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "shape", "n"), [("small_cnn", (1, 28, 28), 6), ("resnet18", (3, 32, 32), 2)]
)
def test_project_models(name: str, shape: tuple[int, ...], n: int) -> None:
    net = build_model(ModelSpec(name, shape, 10), seed=0)
    before = _snapshot(net)
    pool = make_pool(shape, n, seed=5)
    for scheme in SCHEMES:
        want = gradnorm_scores_reference(net, pool.split(4), scheme)  # type: ignore[arg-type]
        got = gradnorm_scores(net, pool.split(4), scheme)  # type: ignore[arg-type]
        assert _rel_err(got, want) <= 1e-4
    _assert_same_state(net, before)
    assert all(p.grad is None for p in net.parameters())


CONV_CASES = [
    # (in, out, kernel, stride, padding, dilation, groups, input side)
    (3, 4, 3, 1, 1, 1, 1, 7),
    (4, 6, (3, 2), (2, 1), (1, 0), 1, 2, 8),
    (2, 6, 3, 2, 2, 2, 1, 9),
    (4, 4, 3, 1, "same", 2, 4, 6),
    (2, 3, 2, 3, "valid", 1, 1, 8),
    (6, 12, 3, 2, 0, 1, 3, 5),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_per_sample_norms_both_forms(case: tuple) -> None:  # type: ignore[type-arg]
    cin, cout, k, stride, pad, dil, groups, side = case
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv = nn.Conv2d(cin, cout, k, stride, pad, dil, groups)
    a = make_pool((cin, side, side), 5, seed=6)
    d_shape = conv(a).shape
    d = make_pool(tuple(d_shape[1:]), 5, seed=7)
    want = []
    for i in range(5):
        (g,) = torch.autograd.grad((conv(a[i : i + 1]) * d[i : i + 1]).sum(), [conv.weight])
        want.append(g.square().sum())
    a_pad = nn.functional.pad(a, gradnorm_module._conv_padding(conv))
    for form in (
        gradnorm_module._conv_weight_sq_norms_shifted,
        gradnorm_module._conv_weight_sq_norms_ghost,
    ):
        torch.testing.assert_close(form(conv, a_pad, d), torch.stack(want), rtol=1e-5, atol=1e-6)


class _StandardisedConv(nn.Conv2d):
    """A conv subclass with its own forward: the hook formulas do not apply to it."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def test_layer_subclass_with_its_own_forward_takes_the_generic_path() -> None:
    net = make_net(TinyCNN)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        net.body[3] = _StandardisedConv(4, 6, 3)
    assert gradnorm_module._hookable_layers(net) is None
    pool = make_pool(TinyCNN.input_shape, 5, seed=9)
    want = gradnorm_scores_reference(net, [pool], "expected")
    assert _rel_err(gradnorm_scores(net, [pool], "expected"), want) <= 1e-4
