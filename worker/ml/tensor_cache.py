"""Decoded items as memory-mapped row files, decoded once and shared by every reader on a host.

A cycle reads its items many times: every training epoch, evaluation, each strategy's pass over
the pool, fold models, shards. Decoding a PNG each time costs more than the small CNN's step on
it. ``TensorCache.rows`` turns an ordered list of item keys into one file of ``(N, *shape)``
rows (uint8 pixels, or float32), opened as a read-only ``np.memmap``: the operating system's
page cache then serves every process of the host (training, evaluation, scoring, shard tasks)
from one copy in memory.

Names: a row file is named by the SHA-256 of its format tag and its ordered item keys, and an
item key is the SHA-256 of the item's payload (plus how it is decoded). A changed payload is a
new key, so it can never read another payload's rows; nothing needs invalidating.

Reuse: a new list (the next cycle's labelled set, its candidates) copies the rows it shares with
the row files already there, newest first, and decodes only the items none of them holds.

Crash safety: files are written under a temporary name and renamed into place (keys first, rows
last), so a reader finds a complete row file or none. Concurrent builders of the same list write
the same bytes; the last rename wins. When the folder grows past ``max_bytes`` the least
recently used row files go (an open memmap of a removed file stays valid on POSIX).

Plain numpy and the filesystem: no web or database imports.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from worker.ml.data import PreBatched

# Bumped when the decoding of any item changes, so old row files are never read again.
FORMAT_VERSION = 1
KEY_BYTES = 33  # 32 digest bytes + 1 byte naming how the payload is decoded
ROWS = ".rows"
KEYS = ".keys"
# Row files looked at for rows to copy before decoding the rest (newest first).
MAX_SOURCES = 16
CHECK_EVERY = 256  # decoded rows between two calls of ``check``

# decode(positions) -> (position, row) pairs for those positions of the requested list, in any
# order, lazily (the cache checks for cancellation between rows); each row has the cache's row
# shape and dtype.
Decoder = Callable[[Sequence[int]], Iterable[tuple[int, np.ndarray]]]


def item_key(payload_sha256: str, how: str) -> bytes:
    """The 33-byte key of one item: its payload digest and a one-letter decode kind."""
    if len(how) != 1:
        raise ValueError(f"decode kind must be one character, got {how!r}")
    return bytes.fromhex(payload_sha256) + how.encode("ascii")


@dataclass(frozen=True)
class BuildStats:
    """What building (or finding) one row file took: rows copied, decoded, and seconds."""

    rows: int
    reused: int
    decoded: int
    seconds: float
    hit: bool  # the whole file was there already


class TensorCache:
    """Row files under ``root``; ``max_bytes`` bounds the folder (least recently used out)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.last_build: BuildStats | None = None

    def rows(
        self,
        keys: Sequence[bytes],
        shape: Sequence[int],
        dtype: np.dtype | type,
        decode: Decoder,
        *,
        tag: str = "",
        check: Callable[[], None] | None = None,
    ) -> np.ndarray:
        """Read-only ``(len(keys), *shape)`` array whose row i is item ``keys[i]`` decoded.

        ``tag`` names the decoding (e.g. the resize target); ``check`` runs between chunks of
        decoding, so a cancelled cycle stops while it fills the cache.
        """
        start = time.perf_counter()
        shape = tuple(int(s) for s in shape)
        dt = np.dtype(dtype)
        if any(len(k) != KEY_BYTES for k in keys):
            raise ValueError(f"item keys must be {KEY_BYTES} bytes")
        folder = self.root / _format_name(shape, dt, tag)
        name = _list_name(keys)
        path = folder / (name + ROWS)
        n = len(keys)
        if path.exists():
            os.utime(path)  # recently used: last to be evicted
            self.last_build = BuildStats(n, n, 0, time.perf_counter() - start, True)
            return _open(path, n, shape, dt)
        folder.mkdir(parents=True, exist_ok=True)
        row_bytes = math.prod(shape) * dt.itemsize
        reused, decoded = 0, 0
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=ROWS)
        try:
            os.ftruncate(fd, max(n * row_bytes, 1))
            os.close(fd)
            out = np.memmap(tmp, dtype=dt, mode="r+", shape=(n, *shape)) if n else None
            missing = np.ones(n, dtype=bool)
            if out is not None:
                reused = _copy_known(folder, keys, out, missing, shape, dt, exclude=path)
                todo = [int(i) for i in np.flatnonzero(missing)]
                for pos, row in decode(todo) if todo else ():
                    if check is not None and decoded % CHECK_EVERY == 0:
                        check()
                    out[pos] = row
                    missing[pos] = False
                    decoded += 1
                if missing.any():
                    raise RuntimeError(f"decode left {int(missing.sum())} of {n} rows unfilled")
                out.flush()
                del out
            _write_keys(folder, name, keys)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._evict(keep=path)
        self.last_build = BuildStats(n, reused, decoded, time.perf_counter() - start, False)
        return _open(path, n, shape, dt)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def _files(self) -> list[Path]:
        if not self.root.exists():
            return []
        return [p for p in self.root.glob("*/*") if p.is_file() and not p.name.startswith(".")]

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used row files (with their keys) while over budget."""
        rows = sorted(
            (p for p in self._files() if p.suffix == ROWS and p != keep),
            key=lambda p: p.stat().st_mtime,
        )
        total = self.size_bytes()
        for victim in rows:
            if total <= self.max_bytes:
                return
            keys = victim.with_suffix(KEYS)
            for p in (victim, keys):
                try:
                    total -= p.stat().st_size
                    p.unlink()
                except FileNotFoundError:  # another process evicted it first
                    pass


class RowsDataset(Dataset[Any]):
    """Items as rows of an array (a row file): ``x`` or ``(x, target)``, like ``ArrayDataset``.

    ``__getitems__`` reads a whole batch with one indexing of the rows (the loader then skips
    collating), which is what keeps a cycle's data path near a plain in-memory loop.
    ``targets``: (N, C) soft targets or None. Subclasses may build the rows lazily (``rows``).
    """

    def __init__(self, rows: np.ndarray | None, targets: np.ndarray | None = None) -> None:
        self._array = rows
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)
        self._target_tensor = None if self.targets is None else torch.from_numpy(self.targets)

    def rows(self) -> np.ndarray:
        assert self._array is not None
        return self._array

    def __len__(self) -> int:
        return len(self.rows())

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        x = batch_tensor(self.rows(), [index])[0]
        if self._target_tensor is None:
            return x
        return x, self._target_tensor[index]

    def __getitems__(self, indices: Sequence[int]) -> PreBatched:
        x = batch_tensor(self.rows(), _as_index(indices))
        if self._target_tensor is None:
            return PreBatched((x,))
        return PreBatched((x, self._target_tensor[torch.as_tensor(list(indices))]))


def _as_index(indices: Sequence[int]) -> slice | list[int]:
    """A run of consecutive indices as a slice (a plain view: pool order reads need no gather)."""
    idx = list(indices)
    if idx and idx[-1] - idx[0] == len(idx) - 1 and all(b - a == 1 for a, b in pairwise(idx)):
        return slice(idx[0], idx[-1] + 1)
    return idx


def batch_tensor(rows: np.ndarray, index: Sequence[int] | slice) -> Tensor:
    """float32 model input for some rows: uint8 pixels scaled to [0, 1], floats as they are.

    Bit-identical to decoding each item alone (``float32(u) / 255`` is one correctly rounded
    division either way).
    """
    picked = np.asarray(rows[index])
    if not picked.flags.writeable:  # a slice of the read-only map; fancy indexing copies
        picked = np.array(picked)
    out = torch.from_numpy(np.ascontiguousarray(picked))
    if out.dtype == torch.uint8:
        return out.to(torch.float32).div_(255.0)
    return out.to(torch.float32)


def _format_name(shape: tuple[int, ...], dt: np.dtype, tag: str) -> str:
    label = f"v{FORMAT_VERSION}-{dt.str}-{'x'.join(map(str, shape))}-{tag}"
    return f"{hashlib.sha256(label.encode()).hexdigest()[:16]}-{dt.name}"


def _list_name(keys: Sequence[bytes]) -> str:
    h = hashlib.sha256(len(keys).to_bytes(8, "little"))
    for k in keys:
        h.update(k)
    return h.hexdigest()


def _open(path: Path, n: int, shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
    if n == 0:
        return np.zeros((0, *shape), dtype=dt)
    return np.memmap(path, dtype=dt, mode="r", shape=(n, *shape))


def _write_keys(folder: Path, name: str, keys: Sequence[bytes]) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=KEYS)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(keys))
        os.replace(tmp, folder / (name + KEYS))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_known(
    folder: Path,
    keys: Sequence[bytes],
    out: np.ndarray,
    missing: np.ndarray,
    shape: tuple[int, ...],
    dt: np.dtype,
    exclude: Path,
) -> int:
    """Copy into ``out`` the rows other row files of ``folder`` hold; returns how many."""
    wanted: dict[bytes, list[int]] = {}
    for pos, k in enumerate(keys):
        wanted.setdefault(k, []).append(pos)
    sources = sorted(
        (p for p in folder.glob("*" + ROWS) if p != exclude and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )[:MAX_SOURCES]
    copied = 0
    for src in sources:
        if not wanted:
            break
        try:
            raw = src.with_suffix(KEYS).read_bytes()
            src_keys = [raw[i : i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)]
            rows = _open(src, len(src_keys), shape, dt)
        except (FileNotFoundError, ValueError):  # evicted meanwhile, or a torn pair
            continue
        dst: list[int] = []
        from_rows: list[int] = []
        for row, k in enumerate(src_keys):
            positions = wanted.pop(k, None)
            if positions is not None:
                dst.extend(positions)
                from_rows.extend([row] * len(positions))
        if dst:
            order = np.argsort(from_rows, kind="stable")  # read the source in file order
            d, s = np.asarray(dst)[order], np.asarray(from_rows)[order]
            for part in _chunks(np.arange(len(d)), 4096):
                out[d[part]] = rows[s[part]]
            missing[d] = False
            copied += len(d)
        os.utime(src)
    return copied


def _chunks(a: np.ndarray, size: int) -> Iterable[np.ndarray]:
    for start in range(0, len(a), size):
        yield a[start : start + size]


__all__ = ["BuildStats", "Decoder", "RowsDataset", "TensorCache", "batch_tensor", "item_key"]
