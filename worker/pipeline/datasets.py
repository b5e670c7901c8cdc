"""Datasets over item payloads in the blob store.

``CachedItemDataset`` (the default) decodes each item once into a memory-mapped row file of the
worker's tensor cache (``worker/ml/tensor_cache.py``) on its first read, and serves every later
read (epochs, evaluation, scoring, shards) from there, a batch at a time. ``ItemDataset`` decodes
one item per read; it stands in when the cache is off (``ANNOLOOP_TENSOR_CACHE_BYTES=0``).
Neither holds a whole pool in process memory: the row file is paged in by the OS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from app.core.blobs import BlobStore
from app.items.media import decode_feature_payload, decode_image_payload
from worker.ml.device import resolve_device
from worker.ml.run_encoders import backbone_of_spec, describe_spec
from worker.ml.spec import ModelSpec
from worker.ml.tensor_cache import RowsDataset, TensorCache, item_key

FEATURES = "application/x-float32"
log = logging.getLogger(__name__)


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
    arr = image_pixels(image, input_shape).astype(np.float32) / 255.0
    return torch.from_numpy(arr)


def image_pixels(image: Image.Image, input_shape: Sequence[int]) -> np.ndarray:
    """A decoded image as (C, H, W) uint8, converted and resized to fit the model."""
    channels, height, width = input_shape
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    arr = arr[None, :, :] if channels == 1 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


# Decoding threads: Pillow and zlib release the GIL while they decode. Threads, not DataLoader
# worker processes: a Celery prefork child is daemonic and may not start processes, and past
# the first fill of the cache a read is a memcpy that workers would only slow down.
DECODE_THREADS = 4
THREADED_FROM = 2000  # fewer missing items decode faster in the calling thread


class CachedItemDataset(RowsDataset):
    """Items by blob hash, decoded once into a row file of ``cache`` on the first read.

    Images are stored as uint8 pixels (a quarter of float32) unless feature vectors share the
    list (then float32). ``check`` runs while the rows are decoded (set by the cycle's watch).
    """

    def __init__(
        self,
        cache: TensorCache,
        blobs: BlobStore,
        hashes: Sequence[str],
        media_types: Sequence[str],
        input_shape: Sequence[int],
        targets: np.ndarray | None = None,
    ) -> None:
        super().__init__(None, targets)
        self.cache = cache
        self.blobs = blobs
        self.hashes = list(hashes)
        self.media_types = list(media_types)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.check: Callable[[], None] | None = None
        features = [m == FEATURES for m in self.media_types]
        self.dtype = np.dtype(np.float32 if any(features) else np.uint8)
        self.keys = [
            item_key(h, "f" if f else "i") for h, f in zip(self.hashes, features, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.hashes)

    def rows(self) -> np.ndarray:
        if self._array is None:
            self._array = self.cache.rows(
                self.keys,
                self.input_shape,
                self.dtype,
                self._decode,
                tag="bilinear",
                check=self.check,
            )
        return self._array

    def _decode(self, positions: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        if len(positions) < THREADED_FROM:
            yield from ((p, self._row(p)) for p in positions)
            return
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            # A chunk at a time, so a cancelled cycle waits for one chunk, not the whole list.
            for start in range(0, len(positions), 1024):
                part = positions[start : start + 1024]
                yield from zip(part, pool.map(self._row, part), strict=True)

    def _row(self, index: int) -> np.ndarray:
        payload = self.blobs.get(self.hashes[index])
        if self.media_types[index] == FEATURES:
            vec = decode_feature_payload(payload, int(np.prod(self.input_shape)))
            return vec.reshape(self.input_shape)
        pixels = image_pixels(decode_image_payload(payload), self.input_shape)
        return pixels if self.dtype == np.uint8 else pixels.astype(np.float32) / 255.0


class EmbeddingDataset(CachedItemDataset):
    """Items as a frozen backbone's (F,) features (an operator's weights file or a pretraining
    run's encoder), computed once per item and checkpoint into
    the tensor cache (the row files are keyed by the weights' digest and the image size), and
    shared by every cycle, strategy and shard that reads them."""

    def __init__(
        self,
        cache: TensorCache,
        blobs: BlobStore,
        hashes: Sequence[str],
        media_types: Sequence[str],
        spec: ModelSpec,
        targets: np.ndarray | None = None,
    ) -> None:
        super().__init__(cache, blobs, hashes, media_types, spec.input_shape, targets)
        self.spec = spec
        feature_dim, self.weights_sha256 = describe_spec(spec)
        self.image_shape = self.input_shape
        self.input_shape = (feature_dim,)
        self.dtype = np.dtype(np.float32)

    def rows(self) -> np.ndarray:
        if self._array is None:
            side = "x".join(map(str, self.image_shape))
            self._array = self.cache.rows(
                self.keys,
                self.input_shape,
                self.dtype,
                self._embed,
                tag=f"embedding-{self.weights_sha256}-{side}",
                check=self.check,
            )
        return self._array

    def _embed(self, positions: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Decode images a batch at a time and run them through the backbone (eval mode)."""
        device = resolve_device()
        net = backbone_of_spec(self.spec).to(device).eval()
        log.info("embedding %d item(s) (%s)", len(positions), self.weights_sha256[:12])
        for start in range(0, len(positions), EMBED_BATCH):
            part = list(positions[start : start + EMBED_BATCH])
            pixels = np.stack([self._pixels(p) for p in part])
            with torch.no_grad():
                x = torch.from_numpy(pixels).to(device, torch.float32).div_(255.0)
                feats = net(x).float().cpu().numpy()
            yield from zip(part, feats, strict=True)

    def _pixels(self, index: int) -> np.ndarray:
        if self.media_types[index] == FEATURES:
            raise ValueError("a pretrained backbone takes images, and this item is a vector")
        return image_pixels(
            decode_image_payload(self.blobs.get(self.hashes[index])), self.image_shape
        )


EMBED_BATCH = 64
