"""Items read through the worker's tensor cache are bit-identical to items decoded on every
read (gray and colour images, resized, feature vectors, a mix), and so is a model trained on
them; the cycle's watch stops a fill."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.core.blobs import LocalBlobStore
from worker.ml.data import LoaderPool
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.tensor_cache import TensorCache
from worker.ml.training import TrainConfig, train
from worker.pipeline.datasets import FEATURES, THREADED_FROM, CachedItemDataset, ItemDataset

SHAPE = (3, 8, 8)


def png(rng: np.random.Generator, size: tuple[int, int], mode: str) -> bytes:
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def store(tmp_path: Path, payloads: list[bytes]) -> tuple[LocalBlobStore, list[str]]:
    blobs = LocalBlobStore(tmp_path / "blobs", durable=False)
    return blobs, [blobs.put(p) for p in payloads]


def both(
    tmp_path: Path, payloads: list[bytes], media: list[str], shape: tuple[int, ...] = SHAPE
) -> tuple[CachedItemDataset, ItemDataset]:
    blobs, hashes = store(tmp_path, payloads)
    cache = TensorCache(tmp_path / "cache", 1 << 30)
    targets = np.eye(2, dtype=np.float32)[np.arange(len(payloads)) % 2]
    return (
        CachedItemDataset(cache, blobs, hashes, media, shape, targets),
        ItemDataset(blobs, hashes, media, shape, targets),
    )


def test_images_of_any_size_and_mode_read_the_same_as_decoding_each_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    payloads = [png(rng, (8, 8), "RGB"), png(rng, (13, 5), "RGB"), png(rng, (8, 8), "L")] * 3
    cached, plain = both(tmp_path, payloads, ["image/png"] * len(payloads))
    assert cached.rows().dtype == np.uint8  # a quarter of the bytes of float32
    for i in range(len(payloads)):
        x, t = cached[i]
        y, u = plain[i]
        assert torch.equal(x, y)
        assert torch.equal(t, u)
    a = torch.cat(list(LoaderPool(cached, 4).subset([7, 2, 0, 8, 1]).batches()))
    b = torch.cat(list(LoaderPool(plain, 4).subset([7, 2, 0, 8, 1]).batches()))
    assert torch.equal(a, b)


def test_feature_vectors_and_a_mixed_list_read_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vecs = [rng.standard_normal(int(np.prod(SHAPE))).astype("<f4").tobytes() for _ in range(4)]
    payloads = [*vecs, png(rng, (8, 8), "RGB")]
    media = [FEATURES] * 4 + ["image/png"]
    cached, plain = both(tmp_path, payloads, media)
    assert cached.rows().dtype == np.float32
    for i in range(len(payloads)):
        assert torch.equal(cached[i][0], plain[i][0])


def test_many_items_decode_in_threads_to_the_same_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    distinct = [png(rng, (4, 4), "L") for _ in range(50)]
    payloads = [distinct[i % 50] for i in range(THREADED_FROM + 10)]
    cached, plain = both(tmp_path, payloads, ["image/png"] * len(payloads), (1, 4, 4))
    got = torch.cat(list(LoaderPool(cached, 256).batches()))
    want = torch.stack([plain[i][0] for i in range(len(payloads))])
    assert torch.equal(got, want)


def test_training_on_cached_items_gives_the_same_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    payloads = [png(rng, (8, 8), "RGB") for _ in range(21)]
    cached, plain = both(tmp_path, payloads, ["image/png"] * len(payloads))
    spec = ModelSpec("mlp", SHAPE, 2, {"hidden_sizes": [16], "dropout": 0.5})
    config = TrainConfig(epochs=3, batch_size=4, class_weighted_below=100)
    models = [build_model(spec, seed=5) for _ in range(2)]
    losses = [
        train(m, d, config, seed=9).losses for m, d in zip(models, (cached, plain), strict=True)
    ]
    assert losses[0] == losses[1]
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_watch_stops_a_fill_and_nothing_half_written_stays(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    payloads = [png(rng, (8, 8), "RGB") for _ in range(300)]
    cached, _ = both(tmp_path, payloads, ["image/png"] * len(payloads))

    def stop() -> None:
        raise RuntimeError("cycle cancelled")

    cached.check = stop
    with pytest.raises(RuntimeError, match="cancelled"):
        cached[0]
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
