"""Shared fixtures for the ML-core tests: small synthetic pools and models, CPU only."""

from __future__ import annotations

import pytest
import torch

from worker.ml.models import Classifier, build_model
from worker.ml.spec import ModelSpec


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    # The test host is shared; keep intra-op parallelism modest.
    torch.set_num_threads(1)


@pytest.fixture
def mlp_spec() -> ModelSpec:
    return ModelSpec.from_dict(
        {"name": "mlp", "input_shape": [6], "num_classes": 3, "hparams": {"hidden_sizes": [16]}}
    )


@pytest.fixture
def mlp_model(mlp_spec: ModelSpec) -> Classifier:
    return build_model(mlp_spec, seed=0)


def synthetic_inputs(n: int, d: int = 6, seed: int = 0) -> torch.Tensor:
    """(n, d) float32 standard-normal inputs from a private generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)
