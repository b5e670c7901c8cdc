"""One contract, two stores: the local folder and S3 (a real server, tests/blobs/conftest.py)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.core.blobs import BlobNotFound, BlobStore, LocalBlobStore, blob_key
from tests.blobs.conftest import Bucket

PREFIX = "team/annoloop"


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "folder":
        return LocalBlobStore(tmp_path / "blobs")
    bucket: Bucket = request.getfixturevalue("bucket")
    return bucket.store(PREFIX)


def _names(store: BlobStore, request: pytest.FixtureRequest) -> list[str]:
    """What the store holds, as relative names (``ab/cd/abcd…``)."""
    if isinstance(store, LocalBlobStore):
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    bucket: Bucket = request.getfixturevalue("bucket")
    return [k.removeprefix(f"{PREFIX}/") for k in bucket.objects()]


def test_put_returns_the_sha256_and_get_gives_the_bytes_back(store: BlobStore) -> None:
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    assert not store.exists(sha)
    assert store.put(data) == sha
    assert store.exists(sha)
    assert store.get(sha) == data


def test_the_same_content_twice_is_one_blob(
    store: BlobStore, request: pytest.FixtureRequest
) -> None:
    data = b"the same bytes"
    first, second = store.put(data), store.put(data)
    assert first == second
    assert _names(store, request) == [blob_key(first)]


def test_every_store_lays_blobs_out_the_same_way(
    store: BlobStore, request: pytest.FixtureRequest
) -> None:
    shas = sorted(store.put(bytes([i]) * (i + 1)) for i in range(5))
    assert _names(store, request) == [f"{s[:2]}/{s[2:4]}/{s}" for s in shas]


def test_a_deleted_blob_is_gone_and_deleting_again_is_no_error(
    store: BlobStore, request: pytest.FixtureRequest
) -> None:
    kept, gone = store.put(b"kept"), store.put(b"gone")
    store.delete(gone)
    assert not store.exists(gone)
    with pytest.raises(BlobNotFound):
        store.get(gone)
    store.delete(gone)
    assert _names(store, request) == [blob_key(kept)]


def test_a_missing_blob_is_a_clear_error(store: BlobStore) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(BlobNotFound) as caught:
        store.get(sha)
    assert sha in str(caught.value)
    assert store.location in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)  # readers that tolerate a gap still do


def test_names_that_are_not_digests_are_refused(store: BlobStore) -> None:
    for bad in ("../../etc/passwd", "ab" * 33, "A" * 64, ""):
        with pytest.raises(ValueError, match="sha256"):
            store.get(bad)


@pytest.mark.parametrize("size", [0, 1, 6 * 1024 * 1024 + 7])
def test_empty_and_large_blobs_round_trip(store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    assert store.get(store.put(data)) == data


def test_concurrent_writers_of_the_same_and_different_blobs(
    store: BlobStore, request: pytest.FixtureRequest
) -> None:
    payloads = [b"shared"] * 8 + [f"own-{i}".encode() for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        shas = list(pool.map(store.put, payloads))
    assert {store.get(s) for s in shas} == set(payloads)
    assert len(_names(store, request)) == 9


def test_a_reachable_store_passes_its_check(store: BlobStore) -> None:
    store.check()
