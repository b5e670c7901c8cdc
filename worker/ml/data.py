"""Datasets, loaders and the ``PoolSource`` protocol that scoring reads.

Scoring never needs the whole pool as tensors: it streams batches in pool order from a
``PoolSource``. The pipeline can back one with a Dataset that decodes files lazily, so a
200,000-item pool is never materialised at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, default_collate


def to_float_tensor(images: np.ndarray, input_shape: Sequence[int]) -> Tensor:
    """Turn one item or a batch into float32 model input.

    uint8 arrays are scaled to [0, 1]; float arrays are taken as already scaled. Accepted layouts
    for ``input_shape == (C, H, W)``: ``(H, W)`` (C must be 1), ``(H, W, C)``, ``(C, H, W)``, and
    the same with a leading batch dimension. For ``(D,)`` any array of D values per item works.

    Returns ``(*input_shape)`` for one item, ``(N, *input_shape)`` for a batch.
    """
    arr = np.asarray(images)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        c, h, w = shape
        # One item is (H, W), (H, W, C) or (C, H, W); anything else carries a batch dimension.
        single = arr.ndim == 2 or (arr.ndim == 3 and arr.shape in {shape, (h, w, c)})
    else:
        single = arr.ndim == len(shape) or arr.ndim == 1
    items = arr.reshape(1, *arr.shape) if single else arr
    batched = not single
    items = _to_layout(items, shape)
    if items.dtype == np.uint8:
        out = torch.from_numpy(np.ascontiguousarray(items)).to(torch.float32).div_(255.0)
    else:
        out = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))
    return out if batched else out[0]


def _to_layout(items: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N, ...) in one of the accepted layouts -> (N, *shape)."""
    n = items.shape[0]
    rest = items.shape[1:]
    if rest == shape:
        return items
    if len(shape) == 3:
        c, h, w = shape
        if rest == (h, w) and c == 1:
            return items.reshape(n, 1, h, w)
        if rest == (h, w, c):
            return items.transpose(0, 3, 1, 2)
        raise ValueError(f"items of shape {rest} do not fit input_shape {list(shape)}")
    if math.prod(rest) == math.prod(shape):
        return items.reshape(n, *shape)
    raise ValueError(f"items of shape {rest} do not fit input_shape {list(shape)}")


class ArrayDataset(Dataset[Any]):
    """In-memory dataset over a numpy array of inputs and optional per-item targets.

    ``inputs``: (N, ...) uint8 or float, any layout ``to_float_tensor`` accepts.
    ``targets``: (N, C) probability vectors (soft labels; hard labels one-hot), or None.
    ``__getitem__`` returns ``x`` (``input_shape``) or ``(x, target)`` with target float32 (C,).
    """

    def __init__(
        self,
        inputs: np.ndarray,
        targets: np.ndarray | None = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        self.inputs = inputs
        self.input_shape = (
            tuple(input_shape) if input_shape is not None else tuple(inputs.shape[1:])
        )
        if targets is not None:
            targets = np.asarray(targets, dtype=np.float32)
            if targets.ndim != 2 or len(targets) != len(inputs):
                raise ValueError(
                    f"targets must be (N, C) with N = {len(inputs)}, got {targets.shape}"
                )
        self.targets = targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        x = to_float_tensor(self.inputs[index], self.input_shape)
        if self.targets is None:
            return x
        return x, torch.from_numpy(self.targets[index])


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) int labels -> (N, C) float32 one-hot rows."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def soft_targets(counts: np.ndarray) -> np.ndarray:
    """(N, C) vote counts -> (N, C) float32 vote distributions (rows sum to 1)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError("every item needs at least one vote to form a soft target")
    return (counts / totals).astype(np.float32)


class PreBatched(tuple[Any, ...]):
    """A whole batch a Dataset's ``__getitems__`` built at once (``(x,)`` or ``(x, target)``
    stacked): the loader hands it on as it is instead of collating items one by one."""


def collate(batch: Any) -> Any:
    """``default_collate``, except that a ``PreBatched`` batch passes through."""
    if isinstance(batch, PreBatched):
        return batch[0] if len(batch) == 1 else tuple(batch)
    return default_collate(batch)


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader[Any]:
    """A DataLoader whose shuffling comes from its own generator seeded with ``seed``.

    Shuffling without a seed would draw from the global RNG, so it is refused.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = None
    if shuffle:
        if seed is None:
            raise ValueError("a shuffled loader needs a seed")
        generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate,
    )


@runtime_checkable
class PoolSource(Protocol):
    """A re-iterable stream of input batches in pool order."""

    def __len__(self) -> int: ...

    def batches(self) -> Iterable[Tensor]:
        """Fresh iterator of float32 ``(b, *input_shape)`` batches covering the pool in order."""
        ...


class LoaderPool:
    """``PoolSource`` over any Dataset whose items are ``x`` or ``(x, ...)``.

    ``batch_size`` is the unit of the shard rule: shards handed to scoring must start at a
    multiple of it so batches are the same as in an unsharded run.
    """

    def __init__(self, dataset: Dataset[Any], batch_size: int = 256, num_workers: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(self) -> Iterator[Tensor]:
        loader = make_loader(self.dataset, self.batch_size, num_workers=self.num_workers)
        for batch in loader:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            yield x.to(torch.float32)

    def subset(self, indices: Sequence[int] | np.ndarray) -> LoaderPool:
        """The pool restricted to ``indices`` (in the given order); positions restart at 0."""
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64)]
        return LoaderPool(Subset(self.dataset, idx), self.batch_size, self.num_workers)

    def shard(self, start: int, stop: int) -> LoaderPool:
        """Contiguous slice ``[start, stop)`` of the pool."""
        n = len(self)
        if not 0 <= start <= stop <= n:
            raise ValueError(f"shard [{start}, {stop}) is outside a pool of {n}")
        return LoaderPool(
            Subset(self.dataset, range(start, stop)), self.batch_size, self.num_workers
        )


class TensorPool:
    """``PoolSource`` over a tensor already in memory (tests, small pools). x: (N, *shape)."""

    def __init__(self, inputs: Tensor, batch_size: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.inputs = inputs
        self.batch_size = batch_size

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batches(self) -> Iterator[Tensor]:
        for start in range(0, len(self), self.batch_size):
            yield self.inputs[start : start + self.batch_size].to(torch.float32)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TensorPool:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return TensorPool(self.inputs[idx], self.batch_size)

    def shard(self, start: int, stop: int) -> TensorPool:
        if not 0 <= start <= stop <= len(self):
            raise ValueError(f"shard [{start}, {stop}) is outside a pool of {len(self)}")
        return TensorPool(self.inputs[start:stop], self.batch_size)


def shard_bounds(n: int, batch_size: int, num_shards: int) -> list[tuple[int, int]]:
    """Split ``[0, n)`` into at most ``num_shards`` contiguous ``(start, stop)`` ranges.

    Every shard but the last holds a multiple of ``batch_size`` items, which is what the shard
    rule needs for sharded scoring to equal an unsharded run bit-for-bit.
    """
    if n < 0 or batch_size < 1 or num_shards < 1:
        raise ValueError("need n >= 0, batch_size >= 1, num_shards >= 1")
    num_batches = math.ceil(n / batch_size)
    per_shard = max(1, math.ceil(num_batches / num_shards)) * batch_size
    bounds = [(start, min(start + per_shard, n)) for start in range(0, n, per_shard)]
    return bounds or [(0, 0)]
