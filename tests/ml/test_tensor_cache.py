"""The tensor cache: rows equal their decoding, later lists decode only new items, a changed
payload is a new key, a failed fill leaves nothing behind, the folder stays under its cap, and
batched reads through a loader equal item-by-item reads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.ml.data import ArrayDataset, LoaderPool, make_loader
from worker.ml.tensor_cache import RowsDataset, TensorCache, batch_tensor, item_key

SHAPE = (1, 4, 4)


def payload(i: int) -> bytes:
    return f"item-{i}".encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixels(data: bytes) -> np.ndarray:
    """A stand-in decoder: pixels derived from the payload bytes alone."""
    seed = int.from_bytes(hashlib.sha256(data).digest()[:4], "little")
    return np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)


class Decoder:
    """Decodes the payloads of one list and counts what it was asked to decode."""

    def __init__(self, payloads: Sequence[bytes]) -> None:
        self.payloads = list(payloads)
        self.asked: list[int] = []

    def __call__(self, positions: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for p in positions:
            self.asked.append(p)
            yield p, pixels(self.payloads[p])


def keys_of(payloads: Sequence[bytes]) -> list[bytes]:
    return [item_key(sha(p), "i") for p in payloads]


def rows(cache: TensorCache, payloads: Sequence[bytes]) -> tuple[np.ndarray, Decoder]:
    dec = Decoder(payloads)
    return cache.rows(keys_of(payloads), SHAPE, np.uint8, dec, tag="t"), dec


def test_rows_are_the_decoded_items_and_a_second_read_decodes_nothing(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path, 1 << 30)
    items = [payload(i) for i in range(50)]
    first, dec = rows(cache, items)
    assert isinstance(first, np.memmap)
    assert sorted(dec.asked) == list(range(50))
    np.testing.assert_array_equal(first, np.stack([pixels(p) for p in items]))
    again, dec2 = rows(cache, items)
    assert dec2.asked == []
    assert cache.last_build is not None
    assert cache.last_build.hit
    np.testing.assert_array_equal(again, first)


def test_a_new_list_copies_the_rows_it_shares_and_decodes_only_new_items(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path, 1 << 30)
    labelled = [payload(i) for i in range(0, 20)]
    candidates = [payload(i) for i in range(20, 60)]
    rows(cache, labelled)
    rows(cache, candidates)
    # The next cycle: ten candidates were labelled, two new items arrived.
    next_labelled = labelled + candidates[:10] + [payload(100)]
    got, dec = rows(cache, next_labelled)
    assert dec.asked == [30]  # only the new item
    assert cache.last_build is not None
    assert (cache.last_build.reused, cache.last_build.decoded) == (30, 1)
    np.testing.assert_array_equal(got, np.stack([pixels(p) for p in next_labelled]))


def test_a_changed_payload_is_decoded_again_never_read_stale(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path, 1 << 30)
    items = [payload(i) for i in range(10)]
    rows(cache, items)
    changed = list(items)
    changed[3] = b"new bytes for item 3"
    got, dec = rows(cache, changed)
    assert dec.asked == [3]
    np.testing.assert_array_equal(got[3], pixels(changed[3]))
    # The same bytes decoded another way (a feature vector) are another key too.
    assert item_key(sha(items[0]), "f") != item_key(sha(items[0]), "i")


def test_duplicates_and_an_empty_list(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path, 1 << 30)
    items = [payload(1), payload(2), payload(1)]
    got, _ = rows(cache, items)
    np.testing.assert_array_equal(got[0], got[2])
    empty, dec = rows(cache, [])
    assert empty.shape == (0, *SHAPE)
    assert dec.asked == []


def test_a_fill_that_fails_leaves_no_file_and_the_next_fill_starts_clean(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path, 1 << 30)
    items = [payload(i) for i in range(600)]
    calls = 0

    def stop() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # checked every 256 rows: stop after the first chunk
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        cache.rows(keys_of(items), SHAPE, np.uint8, Decoder(items), tag="t", check=stop)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    got, dec = rows(cache, items)
    assert len(dec.asked) == 600
    np.testing.assert_array_equal(got, np.stack([pixels(p) for p in items]))


def test_a_decoder_that_skips_a_row_is_an_error_not_a_zero_row(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path, 1 << 30)
    items = [payload(i) for i in range(5)]

    def lossy(positions: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for p in positions[:-1]:
            yield p, pixels(items[p])

    with pytest.raises(RuntimeError, match="1 of 5 rows unfilled"):
        cache.rows(keys_of(items), SHAPE, np.uint8, lossy, tag="t")


def test_the_folder_stays_under_its_cap_least_recently_used_out(tmp_path: Path) -> None:
    row_bytes = int(np.prod(SHAPE))
    per_list = 100 * row_bytes + 100 * 33  # rows + keys
    cache = TensorCache(tmp_path, int(2.5 * per_list))
    lists = [[payload(1000 * k + i) for i in range(100)] for k in range(4)]
    first, _ = rows(cache, lists[0])
    for items in lists[1:]:
        rows(cache, items)
        assert cache.size_bytes() <= cache.max_bytes
    # The newest two are kept, the first is gone; a map opened before still reads.
    _, dec = rows(cache, lists[3])
    assert dec.asked == []
    _, dec = rows(cache, lists[0])
    assert len(dec.asked) == 100
    np.testing.assert_array_equal(first, np.stack([pixels(p) for p in lists[0]]))


def test_batch_tensor_scales_pixels_exactly_as_decoding_one_item_does() -> None:
    every = np.arange(256, dtype=np.uint8).reshape(256, 1, 1, 1)
    got = batch_tensor(every, slice(0, 256))
    want = torch.from_numpy(every.astype(np.float32) / 255.0)
    assert torch.equal(got, want)
    floats = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    assert torch.equal(batch_tensor(floats, [4, 0]), torch.from_numpy(floats[[4, 0]]))


def test_batched_reads_through_a_loader_equal_item_reads() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (37, *SHAPE), dtype=np.uint8)
    targets = rng.dirichlet(np.ones(3), 37).astype(np.float32)
    fast = RowsDataset(images, targets)
    slow = ArrayDataset(images, targets, input_shape=SHAPE)
    for a, b in zip(
        make_loader(fast, 8, shuffle=True, seed=3),
        make_loader(slow, 8, shuffle=True, seed=3),
        strict=True,
    ):
        assert torch.equal(a[0], b[0])
        assert torch.equal(a[1], b[1])
    pool_fast, pool_slow = LoaderPool(RowsDataset(images), 16), LoaderPool(slow, 16)
    for sub in (lambda p: p, lambda p: p.subset([5, 1, 30]), lambda p: p.shard(16, 37)):
        got = torch.cat(list(sub(pool_fast).batches()))
        want = torch.cat(list(sub(pool_slow).batches()))
        assert torch.equal(got, want)
