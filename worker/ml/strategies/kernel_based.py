"""Thin strategy wrappers around the kernels in ``worker.ml.kernels``.

noise_stability (Li et al., AAAI 2024), expected_gradnorm / entropy_gradnorm (Wang et al.,
AAAI 2022) and dispersion (Bengar et al.). The numerics live in the kernels; these classes only
adapt them to the compute/choose split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from worker.ml.data import PoolSource
from worker.ml.kernels.dispersion import DispersionRecorder
from worker.ml.kernels.gradnorm import gradnorm_scores
from worker.ml.kernels.noise_stability import noise_deviations
from worker.ml.strategies.base import (
    Arrays,
    ScoringContext,
    Selection,
    Strategy,
    check_budget,
    pool_size,
)
from worker.ml.strategies.diversity import DeviceChoiceStrategy, k_center_selection
from worker.ml.strategies.registry import register


@register("noise_stability")
class NoiseStability(DeviceChoiceStrategy):
    """compute -> {"deviations": (N, K*C) float32}; choose -> greedy k-center from the origin.

    Deviation block k of item x is (p_noisy_k(x) - p(x)) / ||p(x)||_2 under weight noise k, with
    ||noise|| = zeta ||W|| per layer; noise k is seeded by (seed, k) only, so shards agree. The
    reference scores a random candidate subset (``candidates``, e.g. 1000 on MNIST).
    """

    paper = (
        "Li et al., Deep Active Learning with Noise Stability, AAAI 2024 "
        "(reference: lixingjian/AL-noise-stability)"
    )
    summary = "greedy k-center from the origin on softmax deviations under K weight perturbations"

    def __init__(
        self, *, num_samples: int = 30, zeta: float = 1e-3, candidates: int | None = None
    ) -> None:
        super().__init__(candidates=candidates)
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        if isinstance(zeta, bool) or not isinstance(zeta, int | float) or not zeta > 0:
            raise ValueError(f"zeta must be a number > 0, got {zeta!r}")
        self.num_samples = num_samples
        self.zeta = float(zeta)

    def compute(self, ctx: ScoringContext) -> Arrays:
        num_classes = int(getattr(ctx.model, "num_classes", 0))
        if len(ctx.pool) == 0:
            return {"deviations": np.zeros((0, self.num_samples * num_classes), np.float32)}
        dev = noise_deviations(
            ctx.model,
            ctx.pool.batches(),
            num_samples=self.num_samples,
            zeta=self.zeta,
            seed=ctx.seed,
            device=ctx.device,
        )
        return {"deviations": dev.float().numpy()}

    def choose(
        self,
        arrays: Mapping[str, np.ndarray],
        budget: int,
        seed: int,
        labelled_arrays: Mapping[str, np.ndarray] | None = None,
        ids: np.ndarray | None = None,
    ) -> Selection:
        check_budget(budget)
        pool_size(arrays)
        return k_center_selection(arrays["deviations"], budget, None, self._device())


class GradNorm(Strategy):
    """score -> (N,) sum over parameter tensors of ||grad||_2; choose -> top-B."""

    scheme: ClassVar[Literal["expected", "entropy"]]
    paper = (
        "Wang et al., Boosting Active Learning via Improving Test Performance, AAAI 2022 "
        "(reference: xulabs/aitom al_gradnorm)"
    )

    def __init__(self, *, candidates: int | None = None) -> None:
        super().__init__(candidates=candidates)

    def score(self, ctx: ScoringContext) -> np.ndarray:
        scores = gradnorm_scores(ctx.model, ctx.pool.batches(), self.scheme, ctx.device)
        return scores.to(torch.float64).numpy().reshape(len(ctx.pool))


@register("expected_gradnorm")
class ExpectedGradNorm(GradNorm):
    scheme = "expected"
    summary = "gradient norm of the expected loss sum_i p_i CE(logits, i)"


@register("entropy_gradnorm")
class EntropyGradNorm(GradNorm):
    scheme = "entropy"
    summary = "gradient norm of the prediction entropy H(softmax(logits))"


@register("dispersion")
class Dispersion(Strategy):
    """Needs ``epoch_callback``: records argmax predictions on the candidate pool after every
    training epoch. score -> (N,) 1 - f_x / T; choose -> top-B.

    In one process ``score`` reads the recorder (rows ``offset:offset+n``). Across processes
    the pipeline stores ``training_arrays()`` after training and hands each shard its rows as
    ``ScoringContext.recorded``.
    """

    paper = (
        "Bengar et al., When Deep Learners Change Their Mind: Learning Dynamics for Active "
        "Learning (label dispersion), CAIP 2021"
    )
    summary = "1 - (epochs predicting the modal class) / (epochs recorded), top-B"

    def __init__(self, *, candidates: int | None = None) -> None:
        super().__init__(candidates=candidates)
        self._recorder: DispersionRecorder | None = None

    def epoch_callback(self, pool: PoolSource) -> Callable[[int, nn.Module], None]:
        self._recorder = None

        def record(epoch: int, model: nn.Module) -> None:
            if self._recorder is None:
                num_classes = int(getattr(model, "num_classes", 0))
                if num_classes < 2:
                    raise ValueError("dispersion needs a model with a num_classes attribute")
                self._recorder = DispersionRecorder(pool, num_classes)
            self._recorder(epoch, model)

        return record

    def training_arrays(self) -> Arrays:
        if self._recorder is None:
            return {}
        return {"scores": self._recorder.scores().to(torch.float64).numpy()}

    def score(self, ctx: ScoringContext) -> np.ndarray:
        n = len(ctx.pool)
        if ctx.recorded is not None and "scores" in ctx.recorded:
            scores = np.asarray(ctx.recorded["scores"], dtype=np.float64)
            if scores.shape != (n,):
                raise ValueError(
                    f"recorded dispersion scores have shape {scores.shape}, want ({n},)"
                )
            return scores
        full = self.training_arrays().get("scores")
        if full is None:
            raise ValueError(
                "dispersion needs its epoch_callback to run during training "
                "(or ScoringContext.recorded from Strategy.training_arrays())"
            )
        if ctx.offset + n > len(full):
            raise ValueError(
                f"pool rows {ctx.offset}:{ctx.offset + n} exceed the {len(full)} recorded"
            )
        return full[ctx.offset : ctx.offset + n]
