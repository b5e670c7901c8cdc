from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.ml.data import ArrayDataset, one_hot
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import (
    TrainConfig,
    class_weights,
    soft_cross_entropy,
    train,
)


def _blobs(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two well-separated Gaussian blobs in 6-d; labels (n,)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 6)).astype(np.float32) * 0.5
    x[:, 0] += np.where(y == 1, 3.0, -3.0)
    return x, y


def _spec(**hparams: object) -> ModelSpec:
    return ModelSpec.from_dict(
        {
            "name": "mlp",
            "input_shape": [6],
            "num_classes": 2,
            "hparams": {"hidden_sizes": [16], **hparams},
        }
    )


def _pairs(a: torch.nn.Module, b: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_config_from_hparams() -> None:
    cfg = TrainConfig.from_hparams({"epochs": 3, "lr": 1, "dropout": 0.3, "hidden_sizes": [4]})
    assert cfg.epochs == 3
    assert cfg.lr == 1.0
    assert isinstance(cfg.lr, float)
    assert TrainConfig.from_hparams(cfg.to_hparams()) == cfg


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": True}, "batch_size"),
        ({"schedule": "poly"}, "schedule"),
        ({"momentum": 2.0}, "momentum"),
        ({"whatever": 1}, "unknown hparams"),
    ],
)
def test_config_rejects_bad_values(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_hparams(bad)


def test_training_is_seeded_and_loss_decreases() -> None:
    x, y = _blobs()
    ds = ArrayDataset(x, one_hot(y, 2))
    cfg = TrainConfig(epochs=5, batch_size=16, lr=1e-2)
    spec = _spec()
    m1, m2 = build_model(spec, 0), build_model(spec, 0)
    r1 = train(m1, ds, cfg, seed=7, device="cpu")
    torch.manual_seed(999)  # global RNG state must not matter
    r2 = train(m2, ds, cfg, seed=7, device="cpu")
    assert r1.losses == r2.losses
    assert all(torch.equal(a, b) for a, b in _pairs(m1, m2))
    assert r1.epochs == 5
    assert len(r1.losses) == 5
    assert r1.losses[-1] < r1.losses[0] * 0.5
    m3 = build_model(spec, 0)
    train(m3, ds, cfg, seed=8, device="cpu")
    assert any(not torch.equal(a, b) for a, b in _pairs(m1, m3))
    m1.eval()
    with torch.no_grad():
        acc = (m1(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc == 1.0


def test_training_leaves_global_rng_alone() -> None:
    x, y = _blobs(16)
    before = torch.random.get_rng_state()
    train(build_model(_spec(), 0), ArrayDataset(x, one_hot(y, 2)), TrainConfig(epochs=1), seed=0)
    assert torch.equal(before, torch.random.get_rng_state())


def test_soft_targets_accepted() -> None:
    x, y = _blobs(32)
    soft = np.where(one_hot(y, 2) > 0, 0.8, 0.2).astype(np.float32)
    result = train(build_model(_spec(), 1), ArrayDataset(x, soft), TrainConfig(epochs=2), seed=0)
    assert all(np.isfinite(result.losses))


def test_epoch_callback_called_once_per_epoch_and_train_mode_restored() -> None:
    x, y = _blobs(20)
    calls: list[tuple[int, bool]] = []

    def cb(epoch: int, model: torch.nn.Module) -> None:
        calls.append((epoch, model.training))
        model.eval()

    model = build_model(_spec(), 0)
    modes: list[bool] = []
    model.register_forward_pre_hook(lambda m, _: modes.append(m.training))
    train(
        model,
        ArrayDataset(x, one_hot(y, 2)),
        TrainConfig(epochs=3, batch_size=8),
        seed=0,
        epoch_callback=cb,
    )
    assert calls == [(0, True), (1, True), (2, True)]
    assert all(modes)  # every training forward ran in train mode


def test_soft_cross_entropy_matches_hand_value() -> None:
    logits = torch.tensor([[0.0, 0.0], [np.log(3.0), 0.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    # item 0: -log 0.5; item 1: -(0.5 log 0.75 + 0.5 log 0.25)
    expected = (np.log(2) - 0.5 * (np.log(0.75) + np.log(0.25))) / 2
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected)
    w = torch.tensor([2.0, 0.0], dtype=torch.float64)
    expected_w = (2 * np.log(2) - 0.5 * 2 * np.log(0.75)) / 2
    assert soft_cross_entropy(logits, targets, w).item() == pytest.approx(expected_w)


def test_class_weights() -> None:
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    w = class_weights(targets)
    # masses 3.5 and 0.5 over 2 present classes, N = 4: 4/(2*3.5), 4/(2*0.5), 0 for absent
    assert w.tolist() == pytest.approx([4 / 7, 4.0, 0.0])
    assert float((w * targets.sum(0)).sum()) == pytest.approx(4.0)


def test_class_weighting_kicks_in_below_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.ml.training as training

    seen: list[torch.Tensor | None] = []
    real = training.soft_cross_entropy

    def spy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None):
        seen.append(weights)
        return real(logits, targets, weights)

    monkeypatch.setattr(training, "soft_cross_entropy", spy)
    x, y = _blobs(10)
    y[:8] = 0
    ds = ArrayDataset(x, one_hot(y, 2))
    train(build_model(_spec(), 0), ds, TrainConfig(epochs=1, class_weighted_below=11), seed=0)
    assert seen[0] is not None
    # y = 9 zeros, 1 one: weights N / (K m_c) = 10 / 18, 10 / 2
    assert seen[0].tolist() == pytest.approx([10 / 18, 10 / 2])
    seen.clear()
    train(build_model(_spec(), 0), ds, TrainConfig(epochs=1, class_weighted_below=10), seed=0)
    assert seen[0] is None


@pytest.mark.parametrize(("optimizer", "schedule"), [("sgd", "cosine"), ("adam", "step")])
def test_optimizers_and_schedules_run(optimizer: str, schedule: str) -> None:
    x, y = _blobs(16)
    cfg = TrainConfig(epochs=2, optimizer=optimizer, schedule=schedule, step_size=1, lr=0.01)
    result = train(build_model(_spec(), 0), ArrayDataset(x, one_hot(y, 2)), cfg, seed=0)
    assert len(result.losses) == 2


def test_small_cnn_trains_with_batch_of_one_left_over() -> None:
    spec = ModelSpec.from_dict({"name": "small_cnn", "input_shape": [1, 16, 16], "num_classes": 3})
    x = np.random.default_rng(0).integers(0, 255, size=(9, 16, 16), dtype=np.uint8)
    ds = ArrayDataset(x, one_hot(np.arange(9) % 3, 3), input_shape=(1, 16, 16))
    result = train(build_model(spec, 0), ds, TrainConfig(epochs=1, batch_size=4), seed=0)
    assert result.epochs == 1
