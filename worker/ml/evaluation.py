"""Inference over a ``PoolSource`` and test-set metrics (accuracy, NLL, ECE)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from worker.ml.data import PoolSource
from worker.ml.device import resolve_device

# Probabilities are clamped to this before taking logs, so 0 * log 0 counts as 0.
EPS = 1e-12


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode and no autograd, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def predict_proba(
    model: nn.Module, pool: PoolSource, device: torch.device | str | None = None
) -> Tensor:
    """Softmax posteriors (N, C) float32 on the CPU, streamed batch by batch in eval mode."""
    dev = resolve_device(device)
    model.to(dev)
    out: list[Tensor] = []
    with eval_mode(model):
        for x in pool.batches():
            out.append(torch.softmax(model(x.to(dev)).float(), dim=1).cpu())
    return _cat(out, len(pool))


def predict_features_and_proba(
    model: nn.Module, pool: PoolSource, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Penultimate features (N, F) and softmax posteriors (N, C), float32 on the CPU.

    ``model`` must have ``features`` and ``head`` (a ``Classifier``); dropout is off in eval mode.
    """
    dev = resolve_device(device)
    model.to(dev)
    feats: list[Tensor] = []
    probs: list[Tensor] = []
    with eval_mode(model):
        for x in pool.batches():
            f = model.features(x.to(dev))  # type: ignore[operator]
            feats.append(f.float().cpu())
            probs.append(torch.softmax(model.head(f).float(), dim=1).cpu())  # type: ignore[operator]
    return _cat(feats, len(pool)), _cat(probs, len(pool))


def _cat(parts: list[Tensor], n: int) -> Tensor:
    out = torch.cat(parts) if parts else torch.empty(0, 0)
    if out.shape[0] != n:
        raise RuntimeError(f"pool yielded {out.shape[0]} rows but has {n} items")
    return out


def evaluate(
    model: nn.Module,
    pool: PoolSource,
    labels: np.ndarray,
    device: torch.device | str | None = None,
    n_bins: int = 15,
) -> dict[str, Any]:
    """Metrics of ``model`` on a labelled split; see ``metrics_from_proba``."""
    probs = predict_proba(model, pool, device).numpy()
    return metrics_from_proba(probs, labels, n_bins=n_bins)


def metrics_from_proba(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, Any]:
    """Metrics from posteriors (N, C) and integer labels (N,).

    Returns ``accuracy``; ``per_class_accuracy`` (list of C, None for a class absent from
    ``labels``); ``nll`` (mean -log p_label, p clamped at 1e-12); ``ece`` (expected calibration
    error of the top-class confidence over ``n_bins`` equal-width bins ``((b-1)/n, b/n]``); ``n``.
    All values are plain Python numbers (JSON-able); with N = 0 the metrics are None.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"need probs (N, C) and labels (N,), got {probs.shape}, {labels.shape}")
    n, c = probs.shape
    if n and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in [0, {c})")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if n == 0:
        return {
            "accuracy": None,
            "per_class_accuracy": [None] * c,
            "nll": None,
            "ece": None,
            "n": 0,
        }
    pred = probs.argmax(axis=1)
    correct = pred == labels
    per_class: list[float | None] = []
    for k in range(c):
        mask = labels == k
        per_class.append(float(correct[mask].mean()) if mask.any() else None)
    p_true = probs[np.arange(n), labels]
    nll = float(-np.log(np.clip(p_true, EPS, None)).mean())
    return {
        "accuracy": float(correct.mean()),
        "per_class_accuracy": per_class,
        "nll": nll,
        "ece": expected_calibration_error(probs.max(axis=1), correct, n_bins),
        "n": int(n),
    }


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """sum_b |B_b|/N * |acc(B_b) - conf(B_b)| with bins ((b-1)/n_bins, b/n_bins]."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)
