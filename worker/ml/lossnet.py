"""Learning loss for active learning (Yoo & Kweon, CVPR 2019): a loss-prediction module.

The module reads intermediate feature maps of the task network ("taps"), global-average-pools
each, maps it through Linear(c, 128) + ReLU, concatenates, and a final Linear gives one number
per item: the predicted loss. It trains together with the task network on

    mean_i CE_i + weight · L_rank,   L_rank = (1/P) Σ_p max(0, margin − s_p · (l̂_i − l̂_j)),

over the P = ⌊B/2⌋ pairs (i, j) = (k, B−1−k) of a batch, s_p = +1 if CE_i > CE_j else −1 (ties
count −1), the CE targets detached: the official ``LossPredLoss``
(Mephisto405/Learning-Loss-for-Active-Learning, ``main.py``). After ``stop_gradient_after`` of
the epochs (the official 120 of 200 = 0.6) the taps are detached, so the module's loss stops
shaping the task network. Scoring takes the top-B predicted losses.

Only networks whose taps are known can carry the module: ``small_cnn`` (after each conv
block's pooling and the fc features) and ``resnet18`` (after each of its four stages, as the
official code). Others (``mlp``) are refused when the cycle is created (``strategy_params.NEEDS``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.ml.models import Classifier, build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import Objective

# Module names (in the Classifier) whose outputs the loss module reads.
TAPS: dict[str, tuple[str, ...]] = {
    "small_cnn": ("body.2", "body.5", "body.8"),
    "resnet18": ("body.layer1", "body.layer2", "body.layer3", "body.layer4"),
}
INTERM_DIM = 128


class LossPredictionModule(nn.Module):
    """Taps (each (B, c) or (B, c, H, W)) -> (B,) predicted loss."""

    def __init__(self, channels: list[int], interm_dim: int = INTERM_DIM) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(c, interm_dim) for c in channels)
        self.linear = nn.Linear(len(channels) * interm_dim, 1)

    def forward(self, taps: list[Tensor]) -> Tensor:
        parts = []
        for fc, tap in zip(self.fcs, taps, strict=True):
            pooled = tap.mean(dim=(2, 3)) if tap.dim() == 4 else tap.flatten(1)
            parts.append(F.relu(fc(pooled)))
        out: Tensor = self.linear(torch.cat(parts, dim=1))
        return out.view(-1)


class LossNetClassifier(nn.Module):
    """A ``Classifier`` (``backbone``) with a loss-prediction ``module`` on its taps.

    ``forward(x)`` is the backbone's logits (evaluation and every posterior-based read see the
    task network alone); ``predict(x)`` returns (logits, predicted loss (B,))."""

    def __init__(self, backbone: Classifier, module: LossPredictionModule) -> None:
        super().__init__()
        self.backbone = backbone
        self.module = module
        self.num_classes = backbone.num_classes
        self.arch = f"{backbone.arch} + loss module"
        self._taps: list[Tensor] = []
        modules = dict(backbone.named_modules())
        for name in TAPS[backbone.arch]:
            modules[name].register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: object, output: Tensor) -> None:
        self._taps.append(output)

    def taps(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(logits, the tapped feature maps) of one forward pass."""
        self._taps = []
        logits: Tensor = self.backbone(x)
        taps, self._taps = self._taps, []
        return logits, taps

    def forward(self, x: Tensor) -> Tensor:
        return self.taps(x)[0]

    def predict(self, x: Tensor, detach_taps: bool = False) -> tuple[Tensor, Tensor]:
        logits, taps = self.taps(x)
        if detach_taps:
            taps = [t.detach() for t in taps]
        return logits, self.module(taps)


def can_carry(model_name: str) -> bool:
    return model_name in TAPS


def build_lossnet(spec: ModelSpec, seed: int) -> LossNetClassifier:
    """The backbone from ``seed`` (as ``build_model``) and the module from ``seed + 1``; the
    module's widths are read off one forward pass of a zero input."""
    if not can_carry(spec.name):
        raise ValueError(
            f"model {spec.name!r} cannot carry a loss-prediction module; use one of {sorted(TAPS)}"
        )
    backbone = build_model(spec, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        module = LossPredictionModule(_tap_widths(backbone, spec))
    return LossNetClassifier(backbone, module)


def _tap_widths(backbone: Classifier, spec: ModelSpec) -> list[int]:
    """Channels of each tap, from one eval-mode pass of a zero input (hooks removed after)."""
    seen: list[int] = []
    modules = dict(backbone.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, out: seen.append(int(out.shape[1])))
        for name in TAPS[backbone.arch]
    ]
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(2, *spec.input_shape))
    finally:
        backbone.train()
        for handle in handles:
            handle.remove()
    return seen


def ranking_loss(predicted: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """(B,) predicted and (B,) true losses -> the pairwise margin ranking loss (scalar)."""
    half = len(predicted) // 2
    if half == 0:
        return predicted.sum() * 0.0
    diff_pred = (predicted - predicted.flip(0))[:half]
    diff_true = (target - target.flip(0))[:half].detach()
    sign = 2 * torch.sign(torch.clamp(diff_true, min=0)) - 1
    return torch.clamp(margin - sign * diff_pred, min=0).sum() / half


def objective(
    epochs: int, *, margin: float, weight: float, stop_gradient_after: float
) -> Objective:
    """The training loss of a ``LossNetClassifier`` for ``train(objective=...)``."""
    detach_from = int(stop_gradient_after * epochs)

    def loss(
        model: nn.Module, x: Tensor, target: Tensor, weights: Tensor | None, epoch: int
    ) -> Tensor:
        assert isinstance(model, LossNetClassifier)
        logits, predicted = model.predict(x, detach_taps=epoch > detach_from)
        per_class = target * F.log_softmax(logits, dim=1)
        if weights is not None:
            per_class = per_class * weights
        per_item = -per_class.sum(dim=1)  # the soft-target CE of each item
        return per_item.mean() + weight * ranking_loss(predicted, per_item, margin)

    return loss
