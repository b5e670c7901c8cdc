"""A finished pretraining run as the pretrained model's backbone (``worker/ml/run_encoders.py``):
a k-means checkpoint round-trips to the same features; a SimCLR run's body is rebuilt from its
record; the model's head is as wide as the encoder's features."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from worker.ml import run_encoders
from worker.ml.models import build_model
from worker.ml.patch_kmeans import PatchKMeansConfig, encode, fit
from worker.ml.spec import ModelSpec
from worker.ml.ssl import PretrainConfig, pretrain

BLOBS: dict[str, bytes] = {}


@pytest.fixture(autouse=True)
def _blobs() -> Iterator[None]:
    BLOBS.clear()
    run_encoders.configure(BLOBS.__getitem__)
    yield
    run_encoders._LOADED.clear()


def _put(data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    BLOBS[sha] = data
    return sha


def _spec(run: dict[str, Any], shape: list[int], frozen: bool = True) -> ModelSpec:
    hparams = {"backbone": "pretraining", "frozen": frozen, "pretraining": run}
    return ModelSpec.from_dict(
        {"name": "pretrained", "input_shape": shape, "num_classes": 3, "hparams": hparams}
    )


def test_a_kmeans_run_is_a_frozen_backbone_of_4k_features() -> None:
    images = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    config = PatchKMeansConfig(patch=4, centroids=5, patches=300, iterations=3)
    encoder = fit(images, config, seed=1)
    sha = _put(run_encoders.kmeans_checkpoint(encoder, config))
    run = {"sha256": sha, "model": {"name": "patch_kmeans", "input_shape": [3, 12, 12]}}
    spec = _spec(run, [3, 12, 12])
    assert run_encoders.describe_spec(spec) == (20, sha)
    model = build_model(spec, seed=0)
    assert isinstance(model.body, torch.nn.Identity)  # the pipeline feeds it embeddings
    assert (model.head.in_features, model.weights_sha256) == (20, sha)
    again = run_encoders.backbone_of_spec(spec)
    assert torch.equal(encode(encoder, images), again(images))
    # Refitting with the seed gives the same checkpoint: a redelivered task changes nothing.
    assert run_encoders.kmeans_checkpoint(fit(images, config, seed=1), config) == BLOBS[sha]


def test_a_simclr_run_body_is_rebuilt_from_its_record() -> None:
    body_spec = ModelSpec.from_dict(
        {"name": "mlp", "input_shape": [1, 4, 4], "num_classes": 2, "hparams": {}}
    )
    net = build_model(body_spec, seed=0)
    data = [torch.rand(1, 4, 4) for _ in range(4)]
    state = pretrain(net.body, net.feature_dim, data, PretrainConfig(epochs=1, batch_size=4))
    sha = _put(state.to_bytes())
    run = {"sha256": sha, "model": body_spec.body_key()}
    spec = _spec(run, [1, 4, 4], frozen=False)
    tuned = build_model(spec, seed=0)
    assert tuned.head.in_features == net.feature_dim
    x = torch.rand(2, 1, 4, 4)
    net.body.eval()
    assert torch.equal(tuned.body(x), net.body(x))


def test_the_run_hparam_is_checked() -> None:
    good = {"sha256": "ab" * 32, "model": {"name": "patch_kmeans", "input_shape": [1, 16, 16]}}
    assert _spec(good, [1, 16, 16]).pretraining_run == good
    for bad in [{"sha256": "x", "model": {}}, {"sha256": "ab" * 32}, "ab" * 32]:
        with pytest.raises(ValueError, match=r"hparams\.pretraining"):
            _spec(bad, [1, 16, 16])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"hparams\.pretraining"):
        ModelSpec.from_dict(
            {
                "name": "pretrained",
                "input_shape": [3, 16, 16],
                "num_classes": 2,
                "hparams": {"backbone": "small", "pretraining": good},
            }
        )
