"""BALD with MC dropout (Gal, Islam & Ghahramani, ICML 2017; Houlsby et al. 2011).

score(x) = H(mean_t p_t(x)) - mean_t H(p_t(x)), the mutual information between the prediction
and the weights, estimated with T dropout masks. All our models keep their only dropout between
the penultimate features and the head, so the features are computed once per batch (eval mode)
and only the head is re-run per mask: exactly MC dropout, T times cheaper than full passes.

Masks are keyed by (seed, global pool position) (``positional_rng``), so scoring in shards equals
scoring the whole pool.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from worker.ml.device import resolve_device
from worker.ml.evaluation import EPS, eval_mode
from worker.ml.models import Classifier
from worker.ml.strategies.base import ScoringContext, Strategy
from worker.ml.strategies.positional_rng import positional_uniform
from worker.ml.strategies.registry import register

_MASK_STREAM = 2


def dropout_keep_masks(
    seed: int, positions: Tensor, mc_samples: int, feature_dim: int, p: float
) -> Tensor:
    """(b, T, F) bool keep-masks for the items at global ``positions`` (b,); keep prob 1 - p."""
    u = positional_uniform(seed, positions, mc_samples * feature_dim, stream=_MASK_STREAM)
    return (u >= p).reshape(len(positions), mc_samples, feature_dim)


def mutual_information(probs: Tensor) -> Tensor:
    """(b, T, C) MC posteriors -> (b,) H(mean_t p) - mean_t H(p_t), natural log, float64."""
    p = probs.to(torch.float64)
    mean = p.mean(dim=1)
    h_mean = -(mean * mean.clamp_min(EPS).log()).sum(dim=1)
    mean_h = -(p * p.clamp_min(EPS).log()).sum(dim=2).mean(dim=1)
    return h_mean - mean_h


def mc_dropout_probs(model: Classifier, feats: Tensor, keep: Tensor, p: float) -> Tensor:
    """Head posteriors under each mask. feats (b, F), keep (b, T, F) -> (b, T, C) float64.

    Same arithmetic as ``nn.Dropout``: kept units are scaled by 1 / (1 - p).
    """
    dropped = feats[:, None, :] * keep.to(feats.dtype) * (1.0 / (1.0 - p))
    logits: Tensor = model.head(dropped)
    return torch.softmax(logits.to(torch.float64), dim=-1)


@register("bald")
class Bald(Strategy):
    """score -> (N,) mutual information; choose -> top-B."""

    paper = (
        "Gal, Islam & Ghahramani, Deep Bayesian Active Learning with Image Data, ICML 2017; "
        "Houlsby et al., Bayesian Active Learning for Classification and Preference Learning, "
        "2011"
    )
    summary = "MC-dropout mutual information H(E_t p_t) - E_t H(p_t) over mc_samples masks"

    def __init__(self, *, mc_samples: int = 20, candidates: int | None = None) -> None:
        super().__init__(candidates=candidates)
        if not isinstance(mc_samples, int) or isinstance(mc_samples, bool) or mc_samples < 2:
            raise ValueError(f"mc_samples must be an int >= 2, got {mc_samples!r}")
        self.mc_samples = mc_samples

    def score(self, ctx: ScoringContext) -> np.ndarray:
        model = ctx.model
        p = float(getattr(model, "dropout_p", 0.0))
        if p <= 0.0:
            arch = getattr(model, "arch", type(model).__name__)
            raise ValueError(
                f"bald needs MC dropout but model {arch!r} has no dropout before its head; "
                "set hparams.dropout > 0 (small_cnn and mlp default to 0.5, resnet18 to 0)"
            )
        dev = resolve_device(ctx.device)
        model.to(dev)
        out: list[np.ndarray] = []
        start = ctx.offset
        with eval_mode(model):
            for x in ctx.pool.batches():
                feats = model.features(x.to(dev))
                positions = torch.arange(start, start + len(x), dtype=torch.int64, device=dev)
                keep = dropout_keep_masks(ctx.seed, positions, self.mc_samples, feats.shape[1], p)
                probs = mc_dropout_probs(model, feats, keep, p)
                out.append(mutual_information(probs).cpu().numpy())
                start += len(x)
        return np.concatenate(out) if out else np.zeros(0)
