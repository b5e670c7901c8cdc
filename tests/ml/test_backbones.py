"""Pretrained backbones from a weights file the test makes itself (no downloads): copied into
the cache under a checked digest, loaded strictly into their architecture, head dropped; a
frozen model trains only its head on embeddings, a fine-tuned one starts from the weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from worker.ml import backbones
from worker.ml.backbones import BackboneError, BackboneSource, fetch_weights, load_backbone
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec

ARCH = "mobilenet_v3_small"  # 2.5 M parameters: a 10 MB file
FEATURES = 576


def make_weights(tmp_path: Path, arch: str = ARCH, seed: int = 0) -> tuple[Path, str]:
    torch.manual_seed(seed)
    path = tmp_path / f"{arch}-{seed}.pth"
    torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_are_copied_under_their_digest_and_loaded_without_the_head(
    tmp_path: Path,
) -> None:
    path, sha = make_weights(tmp_path)
    cache = tmp_path / "cache"
    got = fetch_weights(BackboneSource("b", ARCH, path.as_uri(), sha), cache)
    assert got == cache / f"{sha}.pt"
    assert hashlib.sha256(got.read_bytes()).hexdigest() == sha
    net = load_backbone(ARCH, got).eval()
    assert net.feature_dim == FEATURES
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, FEATURES)
    # The loaded weights are the file's.
    state = torch.load(path, weights_only=True)
    first = next(k for k in state if k.endswith("weight"))
    assert torch.equal(net.net.state_dict()[first], state[first])


def test_a_file_whose_checksum_differs_is_refused_and_not_cached(tmp_path: Path) -> None:
    path, sha = make_weights(tmp_path)
    wrong = "0" * 64
    with pytest.raises(BackboneError) as err:
        fetch_weights(BackboneSource("b", ARCH, str(path), wrong), tmp_path / "cache")
    assert err.value.code == "backbone_checksum_mismatch"
    assert sha in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(BackboneError) as err:
        fetch_weights(BackboneSource("b", ARCH, str(tmp_path / "none.pth"), sha), tmp_path / "c")
    assert err.value.code == "backbone_unavailable"


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path, _ = make_weights(tmp_path)
    with pytest.raises(BackboneError) as err:
        load_backbone("resnet18", path)
    assert err.value.code == "backbone_arch_mismatch"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError) as err:
        load_backbone(ARCH, junk)
    assert err.value.code == "backbone_arch_mismatch"
    with pytest.raises(BackboneError) as err:
        load_backbone("vgg11", path)
    assert err.value.code == "unknown_architecture"


def test_frozen_and_fine_tuned_models(tmp_path: Path) -> None:
    path, sha = make_weights(tmp_path)
    backbones.configure({"b": BackboneSource("b", ARCH, str(path), sha)}, tmp_path / "cache")
    frozen = build_model(
        ModelSpec.from_dict(
            {
                "name": "pretrained",
                "input_shape": [3, 32, 32],
                "num_classes": 4,
                "hparams": {"backbone": "b"},
            }
        ),
        seed=0,
    )
    # Frozen: the model takes (B, F) embeddings; only the head has parameters.
    assert frozen.feature_dim == FEATURES
    assert sum(p.numel() for p in frozen.parameters()) == FEATURES * 4 + 4
    assert frozen(torch.rand(3, FEATURES)).shape == (3, 4)
    tuned = build_model(
        ModelSpec.from_dict(
            {
                "name": "pretrained",
                "input_shape": [3, 32, 32],
                "num_classes": 4,
                "hparams": {"backbone": "b", "frozen": False},
            }
        ),
        seed=0,
    )
    assert tuned(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    # Two models do not share (and so do not train) one backbone.
    other = build_model(
        ModelSpec.from_dict(
            {
                "name": "pretrained",
                "input_shape": [3, 32, 32],
                "num_classes": 4,
                "hparams": {"backbone": "b", "frozen": False},
            }
        ),
        seed=0,
    )
    assert tuned.body is not other.body
    for p, q in zip(tuned.parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({}, "needs hparams.backbone"),
        ({"backbone": "Bad Name"}, "hparams.backbone"),
        ({"backbone": "b", "frozen": "yes"}, "hparams.frozen"),
    ],
)
def test_pretrained_specs_are_validated_without_torch(hparams: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_dict(
            {"name": "pretrained", "input_shape": [3, 32, 32], "num_classes": 2, "hparams": hparams}
        )
    with pytest.raises(ValueError, match="only applies to the pretrained"):
        ModelSpec.from_dict(
            {"name": "mlp", "input_shape": [4], "num_classes": 2, "hparams": {"backbone": "b"}}
        )
