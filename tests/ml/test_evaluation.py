from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.ml.data import TensorPool
from worker.ml.evaluation import evaluate, metrics_from_proba, predict_proba


def test_metrics_hand_computed() -> None:
    probs = np.array(
        [
            [0.9, 0.1, 0.0],  # label 0, correct, conf 0.9
            [0.6, 0.4, 0.0],  # label 1, wrong, conf 0.6
            [0.2, 0.7, 0.1],  # label 1, correct, conf 0.7
            [0.5, 0.3, 0.2],  # label 0, correct, conf 0.5
        ]
    )
    labels = np.array([0, 1, 1, 0])
    m = metrics_from_proba(probs, labels, n_bins=2)
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_class_accuracy"] == [1.0, 0.5, None]
    assert m["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.4) + np.log(0.7) + np.log(0.5)) / 4)
    # bins (0, .5] = {0.5 (correct)}, (.5, 1] = {0.9 ok, 0.6 wrong, 0.7 ok}
    ece = 0.25 * abs(1.0 - 0.5) + 0.75 * abs(2 / 3 - (0.9 + 0.6 + 0.7) / 3)
    assert m["ece"] == pytest.approx(ece)


def test_nll_clamps_zero_probability() -> None:
    m = metrics_from_proba(np.array([[1.0, 0.0]]), np.array([1]))
    assert m["nll"] == pytest.approx(-np.log(1e-12))
    assert m["accuracy"] == 0.0


def test_evaluate_streams_model() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(x)

    probs = torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]])
    pool = TensorPool(probs, batch_size=2)
    assert torch.allclose(predict_proba(Fixed(), pool, "cpu"), probs)
    m = evaluate(Fixed(), pool, np.array([1, 0, 1]), "cpu")
    assert m["accuracy"] == pytest.approx(2 / 3)
