"""``start_from_pretraining``: a cycle's recorded checkpoint goes into the network's
``features`` (a learning-loss network's backbone's too), the head stays fresh, and a cycle
without one is left as built."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch

from worker.ml.data import ArrayDataset
from worker.ml.lossnet import build_lossnet
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.ssl import PretrainConfig, pretrain
from worker.pipeline.common import start_from_pretraining

SPEC = ModelSpec.from_dict({"name": "small_cnn", "input_shape": [1, 16, 16], "num_classes": 3})


class Blobs:
    """The one call ``start_from_pretraining`` makes of a blob store."""

    def __init__(self, **blobs: bytes) -> None:
        self.blobs = blobs

    def get(self, sha256: str) -> bytes:
        return self.blobs[sha256]


@pytest.fixture(scope="module")
def pretrained() -> tuple[Any, dict[str, torch.Tensor]]:
    model = build_model(SPEC, seed=0)
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    state = pretrain(model.body, 128, ArrayDataset(x.numpy()), PretrainConfig(epochs=1, seed=0))
    rt = SimpleNamespace(blobs=Blobs(ck=state.to_bytes()))
    return rt, state.encoder


@pytest.mark.parametrize("lossnet", [False, True])
def test_the_checkpoint_goes_into_features_and_the_head_stays(
    pretrained: tuple[Any, dict[str, torch.Tensor]], lossnet: bool
) -> None:
    rt, encoder = pretrained
    model: Any = build_lossnet(SPEC, seed=5) if lossnet else build_model(SPEC, seed=5)
    classifier = model.backbone if lossnet else model
    head = {k: v.clone() for k, v in classifier.head.state_dict().items()}
    start_from_pretraining(rt, model, cast(Any, SimpleNamespace(cycle_id=1, init_checkpoint="ck")))
    body = classifier.body.state_dict()
    assert all(torch.equal(body[k], encoder[k]) for k in encoder)
    assert all(torch.equal(v, classifier.head.state_dict()[k]) for k, v in head.items())


def test_no_checkpoint_leaves_the_model_as_built(
    pretrained: tuple[Any, dict[str, torch.Tensor]],
) -> None:
    rt, _ = pretrained
    model = build_model(SPEC, seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start_from_pretraining(rt, model, cast(Any, SimpleNamespace(cycle_id=1, init_checkpoint=None)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_checkpoint_of_another_architecture_is_refused(
    pretrained: tuple[Any, dict[str, torch.Tensor]],
) -> None:
    rt, _ = pretrained
    other = ModelSpec.from_dict({"name": "small_cnn", "input_shape": [1, 28, 28], "num_classes": 3})
    with pytest.raises(RuntimeError, match="size mismatch"):
        start_from_pretraining(
            rt,
            build_model(other, seed=0),
            cast(Any, SimpleNamespace(cycle_id=1, init_checkpoint="ck")),
        )
