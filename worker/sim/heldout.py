"""The out-of-sample selector model of label cleaning: K cross-fitted fold models.

A selector model trained on the noisy votes fits them (an MLP trained 50 epochs on 700 songs
memorises its labels), so CE(l, p) - H(p) on the items it trained on is near zero everywhere
and ranks little. Here every item's posterior comes from a fold model that never trained on it
(``worker.ml.crossfit``): the items are dealt into K folds once per run seed, fold model k
trains on the other K - 1 folds and predicts fold k.

At each refresh the fold models are trained again on the current votes of their K - 1 folds:
``refit = "finetune"`` continues from the last refresh's fold models for
``TrainConfig.for_finetuning`` epochs (the folds never change, so a fold model still never saw
its own fold); ``refit = "retrain"`` starts fresh models for the full epochs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from worker.ml.crossfit import crossfit_proba, fold_ids, fold_seed
from worker.ml.data import ArrayDataset
from worker.ml.device import resolve_device
from worker.ml.models import Classifier, build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig
from worker.pipeline.common import SCORE_BATCH
from worker.sim.protocol import cycle_seed

REFITS = ("finetune", "retrain")

# What one (protocol, seed) shares between its out-of-sample selectors: the fold models'
# states after the first training and their held-out posteriors.
FirstFit = tuple[list[dict[str, Any]], np.ndarray]


class HeldOutModel:
    """``posteriors(counts)``: (N, C) held-out posteriors of K fold models trained on the votes.

    ``first``: the ``first`` attribute of another selector's model of the same protocol and
    seed (fold states after the first training and their posteriors); it replaces the first
    training, which does not depend on the selector. ``models[k]`` is fold model k.
    """

    def __init__(
        self,
        model: dict[str, Any],
        num_classes: int,
        inputs: np.ndarray,
        seed: int,
        *,
        folds: int = 5,
        refit: str = "finetune",
        first: FirstFit | None = None,
    ) -> None:
        if refit not in REFITS:
            raise ValueError(f"refit must be one of {list(REFITS)}, got {refit!r}")
        self.spec = ModelSpec.from_dict({**model, "num_classes": num_classes})
        self.config = TrainConfig.from_hparams(self.spec.hparams)
        self.inputs = inputs
        self.seed = seed
        self.refit = refit
        self.folds = fold_ids(len(inputs), folds, seed)
        self.device = resolve_device()
        self.models: list[Classifier] = []
        self.first = first
        self.refreshes = 0
        self.train_s = 0.0

    @property
    def k(self) -> int:
        return int(self.folds.max()) + 1

    def _fresh(self, fold: int) -> Classifier:
        return build_model(self.spec, seed=fold_seed(cycle_seed(self.seed, self.refreshes), fold))

    def posteriors(self, counts: np.ndarray) -> np.ndarray:
        """(N, C) votes -> (N, C) float64: item i's row from the fold model that left it out."""
        t0 = time.perf_counter()
        if not self.models and self.first is not None:
            states, probs = self.first
            for fold, state in enumerate(states):
                model = self._fresh(fold)
                model.load_state_dict(state)
                self.models.append(model)
        else:
            config = self.config
            if self.models and self.refit == "finetune":
                config = self.config.for_finetuning()
            else:
                self.models = [self._fresh(k) for k in range(self.k)]
            models = self.models
            targets = counts / counts.sum(axis=1, keepdims=True)
            data = ArrayDataset(self.inputs, targets, input_shape=self.spec.input_shape)
            seed = cycle_seed(self.seed, self.refreshes)
            probs = crossfit_proba(
                models.__getitem__,
                data,
                self.folds,
                config,
                seed=seed,
                device=self.device,
                batch_size=SCORE_BATCH,
            )
            if self.first is None:
                self.first = ([_copy(m) for m in self.models], probs)
        self.refreshes += 1
        self.train_s += time.perf_counter() - t0
        return probs


def _copy(model: torch.nn.Module) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
