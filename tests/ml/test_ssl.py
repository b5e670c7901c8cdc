"""SimCLR pretraining (``worker/ml/ssl.py``): NT-Xent against a per-pair loop, seeded views,
determinism and bit-identical resume."""

from __future__ import annotations

import math

import pytest
import torch

from worker.ml.data import ArrayDataset
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.ssl import (
    PretrainConfig,
    PretrainState,
    augment,
    encoder_state,
    nt_xent,
    pretrain,
)


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """The loss written out anchor by anchor, pair by pair, in float64."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = z.shape[0]
    half = n2 // 2
    total = 0.0
    for i in range(n2):
        positive = i + half if i < half else i - half
        denominator = 0.0
        for k in range(n2):
            if k != i:
                denominator += math.exp(float(z[i] @ z[k]) / t)
        numerator = math.exp(float(z[i] @ z[positive]) / t)
        total += -math.log(numerator / denominator)
    return total / n2


@pytest.mark.parametrize(("b", "d", "t"), [(2, 3, 0.5), (5, 8, 0.1), (7, 4, 1.0)])
def test_nt_xent_equals_the_pairwise_loop(b: int, d: int, t: float) -> None:
    gen = torch.Generator().manual_seed(b * d)
    z1, z2 = torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen)
    assert float(nt_xent(z1, z2, t)) == pytest.approx(nt_xent_reference(z1, z2, t), rel=1e-5)


def test_nt_xent_is_low_for_matching_views() -> None:
    z = torch.eye(4)
    assert float(nt_xent(z, z, 0.1)) < float(nt_xent(z, z.roll(1, dims=0), 0.1))


@pytest.mark.parametrize("shape", [(6, 3, 12, 12), (6, 1, 28, 28), (6, 10)])
def test_views_come_from_the_generator_alone(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    c = augment(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    if len(shape) == 4:
        assert float(a.min()) >= 0.0
        assert float(a.max()) <= 1.0


def _images(n: int = 16, side: int = 16) -> ArrayDataset:
    x = torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(0))
    return ArrayDataset(x.numpy())


def _encoder(side: int = 16) -> tuple[torch.nn.Module, int]:
    spec = ModelSpec.from_dict(
        {"name": "small_cnn", "input_shape": [1, side, side], "num_classes": 2}
    )
    model = build_model(spec, seed=3)
    return model.body, model.feature_dim


CONFIG = PretrainConfig(epochs=3, batch_size=5, lr=1e-3, temperature=0.5, seed=11)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_and_the_encoder_learns() -> None:
    runs = []
    for _ in range(2):
        encoder, dim = _encoder()
        runs.append(pretrain(encoder, dim, _images(), CONFIG))
    assert _same(runs[0].encoder, runs[1].encoder)
    assert runs[0].losses == runs[1].losses
    assert len(runs[0].losses) == 3
    first, _ = _encoder()
    assert not _same(runs[0].encoder, first.state_dict())


def test_resume_after_an_epoch_is_bit_identical() -> None:
    encoder, dim = _encoder()
    whole = pretrain(encoder, dim, _images(), CONFIG)

    saved: list[bytes] = []

    def die_after_first(state: PretrainState) -> None:
        saved.append(state.to_bytes())
        if state.epochs_done == 1:
            raise KeyboardInterrupt("worker killed")

    encoder, dim = _encoder()
    with pytest.raises(KeyboardInterrupt):
        pretrain(encoder, dim, _images(), CONFIG, on_epoch=die_after_first)
    # A fresh process: new encoder object, state read back from bytes.
    encoder, dim = _encoder()
    progress: list[int] = []
    resumed = pretrain(
        encoder,
        dim,
        _images(),
        CONFIG,
        resume=PretrainState.from_bytes(saved[-1]),
        on_epoch=lambda s: progress.append(s.epochs_done),
    )
    assert progress == [2, 3]
    assert resumed.losses == whole.losses
    assert _same(resumed.encoder, whole.encoder)
    assert _same(resumed.projector, whole.projector)
    assert _same(encoder_state(resumed.to_bytes()), whole.encoder)


def test_feature_vectors_pretrain_an_mlp() -> None:
    spec = ModelSpec.from_dict({"name": "mlp", "input_shape": [10], "num_classes": 2})
    model = build_model(spec, seed=0)
    x = torch.randn(9, 10, generator=torch.Generator().manual_seed(2))
    state = pretrain(model.body, model.feature_dim, ArrayDataset(x.numpy()), CONFIG)
    assert len(state.losses) == 3
    assert all(math.isfinite(v) for v in state.losses)
    model.body.load_state_dict(state.encoder)  # loads into the cycle's ``features``


def test_too_few_items_refused() -> None:
    encoder, dim = _encoder()
    with pytest.raises(ValueError, match="at least 2"):
        pretrain(encoder, dim, _images(n=1), CONFIG)
