"""The worker's local copy of remote blobs: one fetch per blob, checked, bounded."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

from app.core.blob_cache import CachedBlobStore
from app.core.blobs import LocalBlobStore
from tests.blobs.conftest import Bucket


class Counting(LocalBlobStore):
    """An origin that counts its reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: Counter[str] = Counter()

    def get(self, sha256: str) -> bytes:
        self.reads[sha256] += 1
        return super().get(sha256)


def _cache_bytes(store: CachedBlobStore) -> int:
    return sum(p.stat().st_size for p in store.cache.root.rglob("*") if p.is_file())


def test_each_blob_is_fetched_once_then_read_locally(tmp_path: Path) -> None:
    origin = Counting(tmp_path / "origin")
    sha = origin.put(b"an item's payload")
    cached = CachedBlobStore(origin, tmp_path / "cache", max_bytes=1 << 20)
    for _ in range(5):  # five epochs
        assert cached.get(sha) == b"an item's payload"
    assert origin.reads[sha] == 1


def test_a_damaged_copy_is_fetched_again(tmp_path: Path) -> None:
    origin = Counting(tmp_path / "origin")
    sha = origin.put(b"good bytes")
    cached = CachedBlobStore(origin, tmp_path / "cache", max_bytes=1 << 20)
    cached.get(sha)
    cached.cache.path(sha).write_bytes(b"torn")
    assert cached.get(sha) == b"good bytes"
    assert origin.reads[sha] == 2
    assert cached.cache.path(sha).read_bytes() == b"good bytes"


def test_writes_go_to_the_origin_and_stay_readable_locally(tmp_path: Path) -> None:
    origin = Counting(tmp_path / "origin")
    cached = CachedBlobStore(origin, tmp_path / "cache", max_bytes=1 << 20)
    sha = cached.put(b"a checkpoint")
    assert origin.exists(sha)
    assert cached.get(sha) == b"a checkpoint"
    assert origin.reads[sha] == 0


def test_a_delete_removes_the_blob_and_the_local_copy(tmp_path: Path) -> None:
    origin = Counting(tmp_path / "origin")
    cached = CachedBlobStore(origin, tmp_path / "cache", max_bytes=1 << 20)
    sha = cached.put(b"a superseded checkpoint")
    cached.delete(sha)
    assert not origin.exists(sha)
    assert not cached.cache.exists(sha)
    assert not cached.exists(sha)


def test_the_copy_stays_under_its_cap_oldest_out_first(tmp_path: Path) -> None:
    origin = Counting(tmp_path / "origin")
    shas = [origin.put(os.urandom(1000)) for _ in range(30)]
    cached = CachedBlobStore(origin, tmp_path / "cache", max_bytes=10_000)
    for i, sha in enumerate(shas):
        cached.get(sha)
        os.utime(cached.cache.path(sha), (i, i))  # a distinct age for each, oldest first
    assert _cache_bytes(cached) <= 10_000
    assert cached.cache.exists(shas[-1])
    assert not cached.cache.exists(shas[0])
    assert all(cached.get(s) == origin.get(s) for s in shas)  # evicted ones come back


def test_a_blob_bigger_than_the_cap_is_not_copied(tmp_path: Path) -> None:
    origin = Counting(tmp_path / "origin")
    sha = origin.put(b"x" * 2000)
    cached = CachedBlobStore(origin, tmp_path / "cache", max_bytes=1000)
    assert cached.get(sha) == b"x" * 2000
    assert not cached.cache.exists(sha)


def test_over_s3(bucket: Bucket, tmp_path: Path) -> None:
    cached = CachedBlobStore(bucket.store("p"), tmp_path / "cache", max_bytes=1 << 20)
    sha = bucket.store("p").put(b"remote")
    assert cached.get(sha) == b"remote"
    assert cached.cache.path(sha).read_bytes() == b"remote"
    assert hashlib.sha256(cached.get(sha)).hexdigest() == sha
    cached.check()
