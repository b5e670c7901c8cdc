"""Learning loss (LL4AL) against an independent transcription of the official code
(Mephisto405/Learning-Loss-for-Active-Learning: ``LossPredLoss`` in main.py, ``LossNet`` in
models/lossnet.py), and the strategy's training and scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from worker.ml.data import ArrayDataset, TensorPool, one_hot
from worker.ml.lossnet import (
    TAPS,
    LossNetClassifier,
    build_lossnet,
    can_carry,
    objective,
    ranking_loss,
)
from worker.ml.models import build_model
from worker.ml.networks import build_network, objective_for
from worker.ml.spec import ModelSpec
from worker.ml.strategies import ScoringContext, get_strategy
from worker.ml.strategies.base import top_b
from worker.ml.strategy_params import LOSS_MODULE, ParamsError, check_model_fits
from worker.ml.training import TrainConfig, soft_cross_entropy, train

CNN = ModelSpec.from_dict(
    {"name": "small_cnn", "input_shape": [1, 16, 16], "num_classes": 4, "hparams": {}}
)


def _official_loss_pred_loss(inp: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """``LossPredLoss(reduction='mean')`` as the official main.py computes it (even batch)."""
    assert len(inp) % 2 == 0
    inp = (inp - inp.flip(0))[: len(inp) // 2]
    target = (target - target.flip(0))[: len(target) // 2].detach()
    one = 2 * torch.sign(torch.clamp(target, min=0)) - 1
    return torch.sum(torch.clamp(margin - one * inp, min=0)) / inp.size(0)


def test_the_ranking_loss_is_the_official_one() -> None:
    g = torch.Generator().manual_seed(0)
    for b in (2, 8, 64):
        pred, true = torch.randn(b, generator=g), torch.rand(b, generator=g)
        true[0] = true[-1]  # a tie counts as -1, as in the official code
        for margin in (0.5, 1.0):
            torch.testing.assert_close(
                ranking_loss(pred, true, margin), _official_loss_pred_loss(pred, true, margin)
            )
    # Odd batches (our trailing batch) drop the middle item: a loop over the pairs.
    pred, true = torch.randn(7, generator=g), torch.rand(7, generator=g)
    want = (
        sum(
            max(0.0, 1.0 - (1.0 if true[k] > true[6 - k] else -1.0) * float(pred[k] - pred[6 - k]))
            for k in range(3)
        )
        / 3
    )
    assert float(ranking_loss(pred, true)) == pytest.approx(want, abs=1e-6)


def test_the_module_is_the_official_lossnet_on_our_taps() -> None:
    net = build_lossnet(CNN, seed=0)
    x = torch.rand(6, 1, 16, 16)
    net.eval()
    logits, taps = net.taps(x)
    torch.testing.assert_close(logits, net.backbone(x))  # forward = the task network
    assert [t.shape[1] for t in taps] == [32, 64, 128]
    # The official LossNet: AvgPool2d over the whole map, view, relu(FC), cat, linear.
    parts = []
    for fc, tap in zip(net.module.fcs, taps, strict=True):
        out = F.avg_pool2d(tap, tap.shape[2]) if tap.dim() == 4 else tap
        parts.append(F.relu(fc(out.view(out.size(0), -1))))
    want = net.module.linear(torch.cat(parts, 1)).view(-1)
    torch.testing.assert_close(net.predict(x)[1], want)


def test_resnet18_taps_are_its_four_stages_and_mlp_cannot_carry_the_module() -> None:
    spec = ModelSpec.from_dict(
        {"name": "resnet18", "input_shape": [3, 32, 32], "num_classes": 10, "hparams": {}}
    )
    net = build_lossnet(spec, seed=0)
    assert [fc.in_features for fc in net.module.fcs] == [64, 128, 256, 512]
    assert sorted(TAPS) == ["resnet18", "small_cnn"]
    mlp = {"name": "mlp", "input_shape": [6], "hparams": {}}
    assert not can_carry("mlp")
    assert not LOSS_MODULE.met(mlp)
    assert all(LOSS_MODULE.met({"name": n}) for n in TAPS)
    with pytest.raises(ParamsError, match="loss-prediction module") as err:
        check_model_fits("acquire", "learning_loss", mlp)
    assert err.value.key == "loss_module"
    with pytest.raises(ValueError, match="cannot carry"):
        build_lossnet(ModelSpec.from_dict({**mlp, "num_classes": 3}), seed=0)


def test_the_objective_is_ce_plus_ranking_and_stops_the_gradient_late() -> None:
    net = build_lossnet(CNN, seed=1)
    x = torch.rand(8, 1, 16, 16)
    y = torch.from_numpy(one_hot(np.arange(8) % 4, 4))
    loss = objective(10, margin=1.0, weight=0.5, stop_gradient_after=0.6)
    net.eval()  # no dropout: the passes below see the same network
    value = loss(net, x, y, None, 0)
    logits, pred = net.predict(x)
    per_item = -(y * F.log_softmax(logits, 1)).sum(1)
    want = per_item.mean() + 0.5 * _official_loss_pred_loss(pred, per_item)
    torch.testing.assert_close(value, want)
    torch.testing.assert_close(per_item.mean(), soft_cross_entropy(logits, y))

    def backbone_grads(epoch: int) -> list[Tensor]:
        net.zero_grad()
        loss(net, x, y, None, epoch).backward()
        return [p.grad.clone() for p in net.backbone.parameters()]  # type: ignore[union-attr]

    def ce_grads() -> list[Tensor]:
        net.zero_grad()
        soft_cross_entropy(net(x), y).backward()
        return [p.grad.clone() for p in net.backbone.parameters()]  # type: ignore[union-attr]

    early, late, ce = backbone_grads(6), backbone_grads(7), ce_grads()
    # Epoch 6 is int(0.6 * 10): still joint; from epoch 7 the module no longer trains the net.
    assert any(not torch.allclose(a, b) for a, b in zip(early, ce, strict=True))
    for a, b in zip(late, ce, strict=True):
        torch.testing.assert_close(a, b)


def test_the_strategy_trains_the_module_and_scores_by_predicted_loss() -> None:
    strategy = get_strategy("learning_loss", weight=1.0)
    net = build_network(strategy, CNN, seed=2)
    assert isinstance(net, LossNetClassifier)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, 1, 16, 16, generator=g)
    y = np.arange(40) % 4
    config = TrainConfig(epochs=3, batch_size=8)
    module_before = [p.clone() for p in net.module.parameters()]
    train(net, ArrayDataset(x.numpy(), one_hot(y, 4)), config, seed=0,
          objective=objective_for(strategy, config))  # fmt: skip
    assert any(
        not torch.equal(a, b) for a, b in zip(module_before, net.module.parameters(), strict=True)
    )
    pool = TensorPool(torch.rand(30, 1, 16, 16, generator=g), 8)
    ctx = ScoringContext(net, pool, None, torch.device("cpu"), 0, 8)  # type: ignore[arg-type]
    sel = strategy.select(ctx, 5)
    net.eval()
    with torch.no_grad():
        want = net.predict(pool.inputs)[1].double().numpy()
    np.testing.assert_allclose(sel.scores, want, rtol=1e-6, atol=1e-7)
    assert sel.indices.tolist() == top_b(sel.scores, 5, 0).indices.tolist()
    # A plain network is refused with the reason.
    plain = ScoringContext(build_model(CNN, 0), pool, None, torch.device("cpu"), 0, 8)
    with pytest.raises(ValueError, match="loss-prediction module"):
        strategy.select(plain, 5)
