"""BGADL as a strategy (Tran, Do, Reid & Carneiro, ICML 2019): BALD's acquisition, and a
training change, the generative augmentation of ``worker/ml/bgadl.py``.

Scoring is ``bald``'s exactly (the official ``bald_acquisition``: H(mean p) - mean H(p) over
MC-dropout passes; it uses log2, a constant factor that leaves the ranking alone).
``augmentation(seed)`` gives the cycle's training its ``Augmenter``: the worker and the
simulator pass it to ``ceal.fit(augment=...)``, which trains on labelled ∪ generated.
``generator`` picks what generates: ``"vae_acgan"``, the official VAE-ACGAN (one
reconstruction and one sample from noise per labelled item), or ``"vae"``, its VAE part alone
(one reconstruction per item, the behaviour before the ACGAN, kept for reproducibility).
"""

from __future__ import annotations

import torch

from worker.ml.bgadl import GENERATOR_KINDS, Augmenter, BgadlConfig, GeneratorKind
from worker.ml.strategies.bald import Bald
from worker.ml.strategies.registry import register


@register("bgadl")
class Bgadl(Bald):
    """score -> (N,) BALD mutual information; training -> labelled ∪ generated
    (``generator``: "vae_acgan", the official VAE-ACGAN, or "vae", its VAE part alone)."""

    paper = (
        "Tran, Do, Reid & Carneiro, Bayesian Generative Active Deep Learning, ICML 2019 "
        "(reference: toantm/BGADL)"
    )
    summary = (
        "BALD acquisition; each cycle a label-conditioned VAE-ACGAN trained on the labelled "
        "items generates one reconstruction and one sample from noise per item, added to "
        "training with the item's label (generator='vae': the reconstructions of the VAE part)"
    )

    def __init__(
        self,
        *,
        mc_samples: int = 20,
        latent_dim: int = 100,
        epochs: int = 50,
        batch_size: int = 100,
        lr: float = 1.0,
        generator: GeneratorKind = "vae_acgan",
        candidates: int | None = None,
    ) -> None:
        super().__init__(mc_samples=mc_samples, candidates=candidates)
        for key, value in (("latent_dim", latent_dim), ("epochs", epochs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 2:
            raise ValueError(f"batch_size must be an int >= 2, got {batch_size!r}")
        if not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0:
            raise ValueError(f"lr must be a number > 0, got {lr!r}")
        if generator not in GENERATOR_KINDS:
            raise ValueError(f"generator must be one of {GENERATOR_KINDS}, got {generator!r}")
        self.generator: GeneratorKind = generator
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = float(lr)

    def augmentation(self, seed: int, device: torch.device | None = None) -> Augmenter:
        """A fresh augmenter for one cycle's training (its own streams of ``seed``)."""
        config = BgadlConfig(self.latent_dim, self.epochs, self.batch_size, self.lr, self.generator)
        return Augmenter(config, seed, device)
