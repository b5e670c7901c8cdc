"""Learning loss (Yoo & Kweon, CVPR 2019): score = the loss the module predicts for the item.

The cycle's network is a ``LossNetClassifier`` (``worker/ml/lossnet.py``) trained with the
module's ranking loss (``training_objective``); ``build_network`` and ``training_objective``
are how the pipeline and the simulator learn that (``worker/ml/networks.py``). Scoring is one
eval-mode pass, pointwise, so it shards like any top-B score.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from worker.ml.device import resolve_device
from worker.ml.evaluation import eval_mode
from worker.ml.lossnet import LossNetClassifier, build_lossnet, objective
from worker.ml.spec import ModelSpec
from worker.ml.strategies.base import ScoringContext, Strategy
from worker.ml.strategies.registry import register
from worker.ml.training import Objective, TrainConfig


@register("learning_loss")
class LearningLoss(Strategy):
    paper = (
        "Yoo & Kweon, Learning Loss for Active Learning, CVPR 2019 "
        "(Mephisto405/Learning-Loss-for-Active-Learning)"
    )
    summary = "top-B of the loss predicted by a module trained with the task model"

    def __init__(
        self,
        *,
        margin: float = 1.0,
        weight: float = 1.0,
        stop_gradient_after: float = 0.6,
        candidates: int | None = None,
    ) -> None:
        super().__init__(candidates=candidates)
        self.margin = float(margin)
        self.weight = float(weight)
        self.stop_gradient_after = float(stop_gradient_after)

    def build_network(self, spec: ModelSpec, seed: int) -> nn.Module:
        return build_lossnet(spec, seed)

    def training_objective(self, config: TrainConfig) -> Objective:
        return objective(
            config.epochs,
            margin=self.margin,
            weight=self.weight,
            stop_gradient_after=self.stop_gradient_after,
        )

    def score(self, ctx: ScoringContext) -> np.ndarray:
        model = ctx.model
        if not isinstance(model, LossNetClassifier):
            raise ValueError(
                "learning_loss scores with a loss-prediction module; the cycle trained a "
                f"{getattr(model, 'arch', type(model).__name__)!r} without one"
            )
        dev = resolve_device(ctx.device)
        model.to(dev)
        out: list[np.ndarray] = []
        with eval_mode(model):
            for x in ctx.pool.batches():
                out.append(model.predict(x.to(dev))[1].to(torch.float64).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)
