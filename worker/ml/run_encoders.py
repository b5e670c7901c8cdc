"""A project's finished pretraining run as a backbone: ``{"name": "pretrained", "hparams":
{"backbone": "pretraining"}}``.

The API resolves the run when a cycle is created; the worker's copy of the spec carries it as
``hparams.pretraining = {"sha256": checkpoint blob, "model": what the run fitted}`` (see
``worker.pipeline.snapshot``). This module turns that into a module mapping (B, C, H, W) images
in [0, 1] to (B, F) features, as ``backbones`` does for operators' weights files:

- ``model.name == "patch_kmeans"``: the checkpoint is ``kmeans_checkpoint``'s bytes (config and
  buffers) and the encoder is ``patch_kmeans.PatchKMeansEncoder`` (F = 4K). No weights to train.
- otherwise a SimCLR run: ``model`` is the body key it trained (``ModelSpec.body_key``); the
  body is rebuilt from it and loaded strictly from the checkpoint's encoder state.

The checkpoint bytes come from the blob store, through the reader ``configure`` was given (the
worker's runtime): this module imports no web or database code. Loaded encoders are kept per
process by digest, so every cycle, fold model and shard of a host reads a blob once.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from worker.ml.patch_kmeans import PatchKMeansConfig, PatchKMeansEncoder, encoder_from_state
from worker.ml.spec import ModelSpec

KMEANS = "patch_kmeans"
KEEP = 4  # encoders held per process (a SimCLR ResNet-18 body is ~45 MB)

_READ: list[Callable[[str], bytes]] = []
_LOADED: dict[str, tuple[nn.Module, int]] = {}


def configure(read: Callable[[str], bytes]) -> None:
    """How this process reads a checkpoint blob by its digest."""
    _READ[:] = [read]


def kmeans_checkpoint(encoder: PatchKMeansEncoder, config: PatchKMeansConfig) -> bytes:
    """A k-means run's checkpoint: its config (patch, norm_eps, ...) and the encoder's buffers."""
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    torch.save({"method": KMEANS, "config": config.to_dict(), "state": state}, buf)
    return buf.getvalue()


def load_kmeans(data: bytes) -> PatchKMeansEncoder:
    saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    config = saved["config"]
    return encoder_from_state(saved["state"], int(config["patch"]), float(config["norm_eps"]))


def describe(run: dict[str, Any]) -> tuple[int, str]:
    """(feature size, checkpoint digest) of the run, without a copy."""
    return _template(run)[1], str(run["sha256"])


def encoder_for(run: dict[str, Any]) -> nn.Module:
    """A fresh copy of the run's encoder (fine-tuning changes it)."""
    return copy.deepcopy(_template(run)[0])


def _template(run: dict[str, Any]) -> tuple[nn.Module, int]:
    sha = str(run["sha256"])
    if sha not in _LOADED:
        if not _READ:
            raise RuntimeError("run_encoders.configure was not called: no blob reader")
        data = _READ[0](sha)
        model = dict(run["model"])
        encoder: nn.Module
        if model.get("name") == KMEANS:
            encoder = load_kmeans(data)
            width = int(encoder.feature_dim)
        else:
            encoder, width = _simclr_body(model, data)
        while len(_LOADED) >= KEEP:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[sha] = (encoder.eval(), width)
    return _LOADED[sha]


def _simclr_body(model: dict[str, Any], data: bytes) -> tuple[nn.Module, int]:
    # Imported here: ``models`` imports this module for the pretrained model.
    from worker.ml.models import build_model
    from worker.ml.ssl import encoder_state

    classifier = build_model(body_spec(model), seed=0)
    classifier.body.load_state_dict(encoder_state(data))
    return classifier.body, classifier.feature_dim


def body_spec(model: dict[str, Any]) -> ModelSpec:
    """A spec whose ``body_key()`` is ``model`` (a SimCLR run's record); its head is a stub."""
    hparams = {"hidden_sizes": model["hidden_sizes"]} if "hidden_sizes" in model else {}
    return ModelSpec.from_dict(
        {"name": model["name"], "input_shape": model["input_shape"], "num_classes": 2}
        | {"hparams": hparams}
    )


def describe_spec(spec: ModelSpec) -> tuple[int, str]:
    """(feature size, weights' digest) of a pretrained spec's backbone, either kind."""
    run = spec.pretraining_run
    if run is not None:
        return describe(run)
    from worker.ml.backbones import describe as describe_operator

    assert spec.backbone is not None
    return describe_operator(spec.backbone)


def backbone_of_spec(spec: ModelSpec) -> nn.Module:
    """A fresh copy of a pretrained spec's backbone, either kind."""
    run = spec.pretraining_run
    if run is not None:
        return encoder_for(run)
    from worker.ml.backbones import backbone_for

    assert spec.backbone is not None
    return backbone_for(spec.backbone)[0]
