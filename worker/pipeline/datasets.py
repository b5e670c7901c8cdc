"""Datasets that decode item payloads from the blob store lazily, one item at a time.

Nothing holds a whole pool as tensors: a 200,000-item pool costs a list of hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from app.core.blobs import BlobStore
from app.items.media import decode_feature_payload, decode_image_payload

FEATURES = "application/x-float32"


class ItemDataset(Dataset[Any]):
    """Items by blob hash -> ``x`` (``input_shape``, float32 in [0, 1] for images), or
    ``(x, target)`` when ``targets`` (N, C) is given."""

    def __init__(
        self,
        blobs: BlobStore,
        hashes: Sequence[str],
        media_types: Sequence[str],
        input_shape: Sequence[int],
        targets: np.ndarray | None = None,
    ) -> None:
        self.blobs = blobs
        self.hashes = list(hashes)
        self.media_types = list(media_types)
        self.input_shape = tuple(input_shape)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.hashes)

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        x = self._load(index)
        if self.targets is None:
            return x
        return x, torch.from_numpy(self.targets[index])

    def _load(self, index: int) -> Tensor:
        payload = self.blobs.get(self.hashes[index])
        if self.media_types[index] == FEATURES:
            vec = decode_feature_payload(payload, int(np.prod(self.input_shape)))
            return torch.from_numpy(vec.copy()).reshape(self.input_shape)
        return image_tensor(decode_image_payload(payload), self.input_shape)


def image_tensor(image: Image.Image, input_shape: Sequence[int]) -> Tensor:
    """A decoded image as (C, H, W) float32 in [0, 1], converted and resized to fit the model."""
    channels, height, width = input_shape
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.float32) / 255.0
    arr = arr[None, :, :] if channels == 1 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))
