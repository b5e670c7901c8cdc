from __future__ import annotations

import pytest
import torch

from worker.ml.models import Classifier, build_model
from worker.ml.spec import ModelSpec

SPECS = [
    {"name": "small_cnn", "input_shape": [1, 28, 28], "num_classes": 10, "hparams": {}},
    {"name": "resnet18", "input_shape": [3, 32, 32], "num_classes": 4, "hparams": {}},
    {"name": "mlp", "input_shape": [7], "num_classes": 2, "hparams": {"hidden_sizes": [8, 5]}},
]


def _spec(i: int) -> ModelSpec:
    return ModelSpec.from_dict(SPECS[i])


@pytest.mark.parametrize("i", range(len(SPECS)))
def test_spec_round_trips(i: int) -> None:
    spec = _spec(i)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["input_shape"] == SPECS[i]["input_shape"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"name": "vgg"}, "unknown model name"),
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"input_shape": [28, 28]}, "input_shape"),
        ({"input_shape": [1, 8, 8]}, "H, W >= 12"),
        ({"hparams": {"dropout": 1.5}}, "dropout"),
        ({"hparams": {"lr": -1}}, "lr"),
        ({"hparams": {"optimizer": "rmsprop"}}, "optimizer"),
        ({"hparams": {"epochz": 3}}, "unknown hparams"),
        ({"hparams": {"hidden_sizes": [8]}}, "only applies to the mlp"),
        ({"extra": 1}, "unknown model spec keys"),
    ],
)
def test_spec_rejects_bad_input(patch: dict, message: str) -> None:
    d = {**SPECS[0], **patch}
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_dict(d)


@pytest.mark.parametrize("i", range(len(SPECS)))
def test_shapes_and_forward_is_head_of_features(i: int) -> None:
    spec = _spec(i)
    model = build_model(spec, seed=0)
    assert isinstance(model, Classifier)
    x = torch.rand(3, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert feats.shape == (3, model.feature_dim)
    assert logits.shape == (3, spec.num_classes)
    assert model.num_classes == spec.num_classes
    assert torch.allclose(logits, model.head(feats), atol=1e-6)


def test_feature_dims() -> None:
    assert build_model(_spec(0), 0).feature_dim == 128
    assert build_model(_spec(1), 0).feature_dim == 512
    assert build_model(_spec(2), 0).feature_dim == 5


@pytest.mark.parametrize("i", range(len(SPECS)))
def test_seeded_init(i: int) -> None:
    spec = _spec(i)
    state = torch.random.get_rng_state()
    a = build_model(spec, seed=3).state_dict()
    torch.manual_seed(12345)  # the global RNG must not matter
    b = build_model(spec, seed=3).state_dict()
    c = build_model(spec, seed=4).state_dict()
    torch.random.set_rng_state(state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_build_model_leaves_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    build_model(_spec(2), seed=0)
    assert torch.equal(before, torch.random.get_rng_state())


def test_dropout_defaults() -> None:
    assert build_model(_spec(0), 0).dropout_p == 0.5
    assert build_model(_spec(1), 0).dropout_p == 0.0
    spec = ModelSpec.from_dict({**SPECS[1], "hparams": {"dropout": 0.2}})
    assert build_model(spec, 0).dropout_p == 0.2
