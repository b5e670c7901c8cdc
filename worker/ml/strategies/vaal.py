"""VAAL as a strategy (Sinha, Ebrahimi & Darrell, ICCV 2019); the method: ``worker/ml/vaal.py``.

``compute`` reads the candidates' inputs (pointwise, so it shards like any other strategy);
``compute_labelled`` the labelled items' inputs; ``choose`` trains a fresh VAE and
discriminator on both, seeded by the cycle's seed, and takes the B items with the highest
``1 - D(mu(x))``. The cycle's task model is trained as usual and not read: VAAL is
task-agnostic.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from worker.ml.strategies.base import (
    Arrays,
    ScoringContext,
    Selection,
    Strategy,
    check_budget,
    check_ints,
    pool_size,
    top_b,
)
from worker.ml.strategies.registry import register
from worker.ml.vaal import VaalConfig, train_vaal, unlabelled_probability


def read_inputs(pool: object) -> np.ndarray:
    """(N, *input_shape) float32 model inputs of a pool, in pool order."""
    parts = [x.float().cpu().numpy() for x in pool.batches()]  # type: ignore[attr-defined]
    if not parts:
        return np.zeros((0,), np.float32)
    return np.concatenate(parts)


@register("vaal")
class Vaal(Strategy):
    """compute -> {"inputs": (N, *shape)}; compute_labelled -> {"inputs": (M, *shape)};
    choose -> VAE + discriminator trained on both, top-B of P(unlabelled)."""

    paper = (
        "Sinha, Ebrahimi & Darrell, Variational Adversarial Active Learning, ICCV 2019 "
        "(reference: sinhasam/vaal)"
    )
    summary = (
        "items a discriminator on a beta-VAE's latent space, trained adversarially against "
        "the VAE, finds least likely to be labelled"
    )
    needs_labelled = True
    # Where choose trains the VAE (not a parameter; set by the caller): None = CPU.
    choose_device: torch.device | None = None

    def __init__(
        self,
        *,
        latent_dim: int = 32,
        beta: float = 1.0,
        adversary_param: float = 1.0,
        vae_steps: int = 2,
        adversary_steps: int = 1,
        lr: float = 5e-4,
        batch_size: int = 128,
        epochs: int = 10,
        width: int = 16,
        candidates: int | None = None,
    ) -> None:
        super().__init__(candidates=candidates)
        check_ints(
            latent_dim=latent_dim,
            vae_steps=vae_steps,
            adversary_steps=adversary_steps,
            epochs=epochs,
            width=width,
        )
        check_ints(2, batch_size=batch_size)
        for key, num in (("beta", beta), ("adversary_param", adversary_param), ("lr", lr)):
            if not isinstance(num, int | float) or isinstance(num, bool) or not num >= 0:
                raise ValueError(f"{key} must be a number >= 0, got {num!r}")
        self.latent_dim = latent_dim
        self.beta = float(beta)
        self.adversary_param = float(adversary_param)
        self.vae_steps = vae_steps
        self.adversary_steps = adversary_steps
        self.lr = float(lr)
        self.batch_size = batch_size
        self.epochs = epochs
        self.width = width

    @property
    def config(self) -> VaalConfig:
        return VaalConfig(
            latent_dim=self.latent_dim,
            beta=self.beta,
            adversary_param=self.adversary_param,
            vae_steps=self.vae_steps,
            adversary_steps=self.adversary_steps,
            lr=self.lr,
            batch_size=self.batch_size,
            epochs=self.epochs,
            width=self.width,
        )

    def compute(self, ctx: ScoringContext) -> Arrays:
        return {"inputs": read_inputs(ctx.pool)}

    def compute_labelled(self, ctx: ScoringContext) -> Arrays:
        if ctx.labelled is None or len(ctx.labelled) == 0:
            raise ValueError("vaal needs labelled items (the discriminator's positive class)")
        return {"inputs": read_inputs(ctx.labelled)}

    def choose(
        self,
        arrays: Mapping[str, np.ndarray],
        budget: int,
        seed: int,
        labelled_arrays: Mapping[str, np.ndarray] | None = None,
        ids: np.ndarray | None = None,
    ) -> Selection:
        check_budget(budget)
        n = pool_size(arrays)
        if labelled_arrays is None or "inputs" not in labelled_arrays:
            raise ValueError("vaal needs the labelled items' inputs (compute_labelled)")
        if n == 0 or budget == 0:
            return top_b(np.zeros(n), budget, seed, ids)
        unlabelled = torch.from_numpy(np.ascontiguousarray(arrays["inputs"], np.float32))
        labelled = torch.from_numpy(np.ascontiguousarray(labelled_arrays["inputs"], np.float32))
        device = self.choose_device or torch.device("cpu")
        trained = train_vaal(labelled, unlabelled, self.config, seed, device)
        scores = unlabelled_probability(trained, unlabelled, device)
        return top_b(scores, budget, seed, ids)
