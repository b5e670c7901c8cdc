"""Label dispersion: hand-worked values and a recorder that costs one eval pass per epoch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from tests.ml.test_kernels_nets import TinyCNN, make_net, make_pool
from worker.ml.kernels import DispersionRecorder, dispersion_from_predictions


def test_hand_worked_dispersion() -> None:
    # Columns are items, rows are 4 recorded epochs.
    preds = torch.tensor(
        [
            [0, 0, 0, 2, 1, 7],
            [0, 1, 1, 2, 1, 7],
            [0, 0, 2, 1, 2, 300],
            [0, 1, 3, 0, 2, 7],
        ]
    )
    # modal counts: 4; 2 (tie 0/1); 1 (all differ); 2; 2 (tie 1/2); 3
    want = torch.tensor([0.0, 0.5, 0.75, 0.5, 0.5, 0.25])
    torch.testing.assert_close(dispersion_from_predictions(preds), want)


def test_single_epoch_and_bad_input() -> None:
    torch.testing.assert_close(
        dispersion_from_predictions(torch.tensor([[3, 1, 2]])), torch.zeros(3)
    )
    with pytest.raises(ValueError, match="at least one"):
        dispersion_from_predictions(torch.zeros((0, 3), dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(T, N\)"):
        dispersion_from_predictions(torch.zeros(3, dtype=torch.long))


def test_matches_counting_on_random_predictions() -> None:
    g = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 4, (9, 50), generator=g)
    modal = torch.stack([torch.bincount(preds[:, i], minlength=4).max() for i in range(50)])
    torch.testing.assert_close(dispersion_from_predictions(preds), 1 - modal.float() / 9)


class _Pool:
    def __init__(self, x: Tensor, batch_size: int) -> None:
        self.x = x
        self.batch_size = batch_size
        self.passes = 0

    def __len__(self) -> int:
        return len(self.x)

    def batches(self) -> Iterator[Tensor]:
        self.passes += 1
        yield from self.x.split(self.batch_size)


class _Counting(nn.Module):
    """Wraps a net and records, per forward call, (train flag, grad enabled, batch size)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls: list[tuple[bool, bool, int]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((self.training, torch.is_grad_enabled(), x.shape[0]))
        return self.net(x)


def test_recorder_one_eval_pass_per_epoch_and_restores_train_mode() -> None:
    x = make_pool(TinyCNN.input_shape, 10, seed=1)
    pool = _Pool(x, batch_size=4)
    model = _Counting(make_net(TinyCNN)).train()
    rec = DispersionRecorder(pool, num_classes=5)
    expected_rows = []
    for epoch in range(3):
        with torch.no_grad():  # change the model between epochs, as training would
            model.net.head.bias.add_(torch.arange(5.0) * (epoch - 1))
        rec(epoch, model)
        assert model.training
        assert all(m.training for m in model.modules())
        model.eval()
        with torch.no_grad():
            expected_rows.append(model.net(x).argmax(dim=1))
        model.train()
    assert pool.passes == 3
    assert [c[2] for c in model.calls] == [4, 4, 2] * 3  # one pass over the pool per epoch
    assert all(not training and not grad for training, grad, _ in model.calls)
    preds = rec.predictions()
    assert preds.shape == (3, 10)
    assert preds.dtype == torch.long
    assert rec._rows[0].dtype == torch.uint8  # stored compactly
    assert torch.equal(preds, torch.stack(expected_rows))
    torch.testing.assert_close(rec.scores(), dispersion_from_predictions(preds))
    assert rec.epochs == [0, 1, 2]


def test_recorder_leaves_an_eval_model_in_eval() -> None:
    pool = _Pool(make_pool(TinyCNN.input_shape, 3, seed=2), batch_size=8)
    model = make_net(TinyCNN).eval()
    rec = DispersionRecorder(pool, num_classes=5)
    rec(0, model)
    assert not model.training
    assert rec.predictions().shape == (1, 3)
