"""``python -m worker.sim.features`` and the cleaning protocols that read its file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from worker.ml import patch_kmeans
from worker.sim import features
from worker.sim.cleaning import CLEANING_PROTOCOLS, run_cleaning
from worker.sim.cli import with_input_shape
from worker.sim.protocol import load_arrays

SMALL = ["--centroids", "16", "--patches", "2000"]


def _tiny_file(path: Path, n: int = 40) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    counts = np.zeros((n, 10), dtype=np.int16)
    counts[np.arange(n), labels] = 5
    counts[np.arange(n), (labels + 1) % 10] = 2
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=labels.astype(np.uint8), counts=counts)


def test_the_file_holds_features_in_row_order_and_the_labels_copied(tmp_path: Path) -> None:
    src, out = tmp_path / "src.npz", tmp_path / "out.npz"
    _tiny_file(src)
    features.main([*SMALL, "--data", str(src), "--out", str(out), "--seed", "3"])
    with np.load(src) as a, np.load(out) as b:
        assert b["features"].shape == (40, 4 * 16)
        assert np.array_equal(a["labels"], b["labels"])
        assert np.array_equal(a["counts"], b["counts"])
        assert "images" not in b.files
        meta = json.loads(str(b["meta"]))
        # row i's features are image i's: encoding the rows reversed reverses them
        imgs = features.images_of({"images": a["images"]})
    enc = patch_kmeans.fit(imgs, patch_kmeans.PatchKMeansConfig(centroids=16, patches=2000), 3)
    again = patch_kmeans.encode(enc, imgs.flip(0)).numpy()
    with np.load(out) as b:
        np.testing.assert_allclose(again[::-1], b["features"], rtol=1e-5, atol=1e-4)
    assert (meta["method"], meta["seed"]) == ("kmeans", 3)


def test_a_features_protocol_trains_its_head_on_the_file(tmp_path: Path) -> None:
    src, out = tmp_path / "src.npz", tmp_path / "out.npz"
    _tiny_file(src, n=60)
    features.main([*SMALL, "--data", str(src), "--out", str(out)])
    proto = CLEANING_PROTOCOLS["cifar10h-clean-t2-features"]
    assert "input_shape" not in proto.model
    proto = proto.with_overrides(
        data=proto.data.__class__(**{**proto.data.__dict__, "path": str(out)}),
        size=60,
        refresh_every=0,
        model={**proto.model, "hparams": {**proto.model["hparams"], "epochs": 2}},
    )
    arrays = load_arrays(proto.data)
    proto = with_input_shape(proto, arrays)
    assert proto.model["input_shape"] == [arrays.images.shape[1]]
    assert abs(float(arrays.images.mean(axis=0).max())) < 1e-4  # standardised
    run = run_cleaning(proto, "ce_minus_entropy", 0, arrays)
    assert run.trace.relabels[-1] > 0
