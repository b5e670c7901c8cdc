"""A worker's local read-through copy of a remote blob store.

Training reads every item's payload once per epoch: from S3 that would be one request per item
per epoch. Content addressing makes a cache trivially correct (a name's bytes never change), so
the first read fetches, later reads hit the local disk. Entries are checked against their name
when read, so the copy skips fsync and a damaged entry is fetched again. Past ``max_bytes``
the oldest entries go first; worker processes on one host may share the folder.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from app.core.blobs import BlobStore, LocalBlobStore
from app.core.errors import InsufficientStorage

log = logging.getLogger(__name__)
KEEP_AFTER_PRUNE = 0.8  # prune to 80 % of the cap, so pruning is not every write


class CachedBlobStore:
    def __init__(self, origin: BlobStore, folder: Path, max_bytes: int) -> None:
        self.origin = origin
        self.cache = LocalBlobStore(folder, durable=False)
        self.max_bytes = max_bytes
        self._size: int | None = None  # this process's estimate; each prune recounts

    @property
    def location(self) -> str:
        return self.origin.location

    def put(self, data: bytes) -> str:
        digest = self.origin.put(data)
        self._keep(data)  # checkpoints and plans are read back by this host's next task
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            data = self.cache.get(sha256)
        except FileNotFoundError:
            pass
        else:
            if hashlib.sha256(data).hexdigest() == sha256:
                return data
            self.cache.path(sha256).unlink(missing_ok=True)
        data = self.origin.get(sha256)
        self._keep(data)
        return data

    def exists(self, sha256: str) -> bool:
        return self.cache.exists(sha256) or self.origin.exists(sha256)

    def delete(self, sha256: str) -> None:
        self.origin.delete(sha256)
        self.cache.delete(sha256)  # this host's copy; other hosts' age out of their caps

    def check(self) -> None:
        self.origin.check()

    def _keep(self, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        try:
            self.cache.put(data)
        except (OSError, InsufficientStorage):
            log.warning("blob cache: could not keep a copy in %s", self.cache.root, exc_info=True)
            return
        if self._size is None:
            self._size = _entries_size(self.cache.root)
        else:
            self._size += len(data)
        if self._size > self.max_bytes:
            self._size = _prune(self.cache.root, int(self.max_bytes * KEEP_AFTER_PRUNE))


def _entries(root: Path) -> list[tuple[float, int, Path]]:
    out = []
    for path in root.glob("*/*/*"):
        try:
            st = path.stat()
        except FileNotFoundError:  # another process pruned it
            continue
        out.append((st.st_mtime, st.st_size, path))
    return out


def _entries_size(root: Path) -> int:
    return sum(size for _, size, _ in _entries(root))


def _prune(root: Path, target: int) -> int:
    entries = sorted(_entries(root))
    total = sum(size for _, size, _ in entries)
    for _, size, path in entries:
        if total <= target:
            break
        path.unlink(missing_ok=True)
        total -= size
    return total
