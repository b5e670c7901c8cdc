"""K-fold cross-fitting: balanced seeded folds, fold models that never see their fold, and
held-out predictions put back in item order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from worker.ml import crossfit
from worker.ml.crossfit import assemble, check_folds, crossfit_proba, fold_ids, train_fold
from worker.ml.data import ArrayDataset
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig


def test_folds_are_balanced_seeded_and_cover_every_item() -> None:
    folds = fold_ids(23, 5, seed=4)
    assert sorted(np.bincount(folds).tolist()) == [4, 4, 5, 5, 5]
    assert np.array_equal(folds, fold_ids(23, 5, seed=4))
    assert not np.array_equal(folds, fold_ids(23, 5, seed=5))
    for bad in (1, 0, 24, True):
        with pytest.raises(ValueError, match="fold"):
            check_folds(bad, 23)  # type: ignore[arg-type]


class _Recording(Dataset[Any]):
    """Remembers every index the trainer reads."""

    def __init__(self, inner: ArrayDataset) -> None:
        self.inner = inner
        self.seen: set[int] = set()

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Any:
        self.seen.add(int(index))
        return self.inner[index]


def test_a_fold_model_never_reads_its_own_fold() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 30)]
    folds = fold_ids(30, 3, seed=1)
    spec = ModelSpec.from_dict({"name": "mlp", "input_shape": [4], "num_classes": 3})
    for k in range(3):
        data = _Recording(ArrayDataset(x, targets))
        train_fold(build_model(spec, 0), data, folds, k, TrainConfig(epochs=2), seed=0)
        assert data.seen == set(np.flatnonzero(folds != k).tolist())


def test_heldout_probabilities_are_the_fold_models_own() -> None:
    """Against the obvious loop: train model k on the other folds, predict fold k."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(24, 4)).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 24)]
    folds = fold_ids(24, 4, seed=3)
    spec = ModelSpec.from_dict({"name": "mlp", "input_shape": [4], "num_classes": 3})
    config = TrainConfig(epochs=3, batch_size=8)
    got = crossfit_proba(
        lambda k: build_model(spec, 10 + k), ArrayDataset(x, targets), folds, config, seed=7
    )
    assert got.shape == (24, 3)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    for k in range(4):
        model = build_model(spec, 10 + k)
        keep = np.flatnonzero(folds != k)
        crossfit.train(
            model,
            ArrayDataset(x[keep], targets[keep]),
            config,
            seed=crossfit.fold_seed(7, k),
        )
        model.eval()
        with torch.no_grad():
            want = torch.softmax(model(torch.from_numpy(x[folds == k])), dim=1).numpy()
        np.testing.assert_allclose(got[folds == k], want, rtol=1e-5, atol=1e-6)


def test_assemble_refuses_blocks_of_the_wrong_size() -> None:
    folds = np.array([0, 1, 0, 1])
    out = assemble(folds, [np.full((2, 2), 0.25), np.full((2, 2), 0.75)])
    assert out[:, 0].tolist() == [0.25, 0.75, 0.25, 0.75]
    with pytest.raises(ValueError, match="fold 1 holds 2 items"):
        assemble(folds, [np.zeros((2, 2)), np.zeros((3, 2))])
