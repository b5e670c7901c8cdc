"""Pieces every cycle pipeline uses: datasets over blobs, checkpoint bytes, batch size."""

from __future__ import annotations

import io
import logging
from typing import cast

import numpy as np
import torch

from worker.ml.spec import ModelSpec
from worker.ml.tensor_cache import TensorCache
from worker.pipeline.datasets import CachedItemDataset, EmbeddingDataset, ItemDataset
from worker.pipeline.runtime import Runtime
from worker.pipeline.snapshot import CycleInputs, ItemRefs

log = logging.getLogger(__name__)
SCORE_BATCH = 256
# With the tensor cache off, a frozen backbone's embeddings still go through one this big.
EMBEDDINGS_ONLY_BYTES = 1024**3


def dataset_of(
    rt: Runtime, refs: ItemRefs, spec: ModelSpec, targets: np.ndarray | None = None
) -> ItemDataset | CachedItemDataset:
    """The items of ``refs`` as model input (``(x, target)`` with ``targets``), decoded once
    into the worker's tensor cache when it has one."""
    if spec.frozen:  # a frozen backbone's features: computed once, always through a cache
        cache = rt.tensors or TensorCache(rt.settings.tensor_cache, EMBEDDINGS_ONLY_BYTES)
        return EmbeddingDataset(cache, rt.blobs, refs.hashes, refs.media_types, spec, targets)
    if rt.tensors is None:
        return ItemDataset(rt.blobs, refs.hashes, refs.media_types, spec.input_shape, targets)
    return CachedItemDataset(
        rt.tensors, rt.blobs, refs.hashes, refs.media_types, spec.input_shape, targets
    )


def pixels_of(rt: Runtime, refs: ItemRefs, input_shape: tuple[int, ...]) -> torch.Tensor:
    """(N, C, H, W) float32 in [0, 1]: the items' images decoded as cycles decode them (through
    the tensor cache when there is one), whatever network the project trains on them. What a
    k-means pretraining run fits on."""
    if rt.tensors is None:
        data = ItemDataset(rt.blobs, refs.hashes, refs.media_types, input_shape)
        return torch.stack([cast(torch.Tensor, data[i]) for i in range(len(data))])
    rows = CachedItemDataset(
        rt.tensors, rt.blobs, refs.hashes, refs.media_types, input_shape
    ).rows()
    images = torch.from_numpy(np.array(rows)).float()
    return images.div_(255.0) if rows.dtype == np.uint8 else images


def state_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def load_state(rt: Runtime, model: torch.nn.Module, sha256: str) -> None:
    weights = torch.load(io.BytesIO(rt.blobs.get(sha256)), weights_only=True)
    model.load_state_dict(weights)


def start_from_pretraining(rt: Runtime, model: torch.nn.Module, inputs: CycleInputs) -> None:
    """``hparams.init = "pretraining"``: load the cycle's recorded pretraining checkpoint into
    the network's ``features`` (its ``body``; a learning-loss network's backbone's); the head
    stays as ``build_model`` seeded it. Strict: a checkpoint of another architecture fails."""
    if inputs.init_checkpoint is None:
        return
    from worker.ml.ssl import encoder_state

    log.info(
        "cycle %s starts features from pretraining %s", inputs.cycle_id, inputs.init_checkpoint
    )
    classifier = getattr(model, "backbone", model)  # LossNetClassifier wraps a Classifier
    body = cast(torch.nn.Module, classifier.body)
    body.load_state_dict(encoder_state(rt.blobs.get(inputs.init_checkpoint)))
