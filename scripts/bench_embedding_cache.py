"""Time and memory of a frozen backbone's embedding cache (issue 19).

    .venv/bin/python scripts/bench_embedding_cache.py --items 2000 --arch resnet18 --threads 1

Stores ``--items`` CIFAR-10H images (``$ANNOLOOP_SHARED_DATA/cifar10h.npz``, else seeded noise)
as PNG blobs, writes a randomly initialised ``--arch`` weights file (the speed does not depend
on the values), and reads the items through ``EmbeddingDataset`` three ways: the first fill
(decode + forward pass per item), a second read of the same list (a hit: the row file is mapped),
and the next cycle's list (a tenth of the items moved between lists: rows copied, none
computed). Prints seconds, the row file's bytes and the process's peak resident memory
(``VmHWM``) before and after the fill, next to a plain forward pass over the same images in
memory (the compute floor).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.blobs import LocalBlobStore
from worker.ml import backbones
from worker.ml.spec import ModelSpec
from worker.ml.tensor_cache import TensorCache
from worker.pipeline.datasets import EmbeddingDataset


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def images(n: int) -> np.ndarray:
    path = Path(os.environ.get("ANNOLOOP_SHARED_DATA", "../shared/data")) / "cifar10h.npz"
    if path.exists():
        with np.load(path) as d:
            return np.asarray(d["images"][:n])
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--side", type=int, default=32, help="image side the backbone sees")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="annoloop-embed-"))
    blobs = LocalBlobStore(root / "blobs", durable=False)
    arr = images(args.items)
    hashes = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        hashes.append(blobs.put(buf.getvalue()))
    weights = root / "w.pth"
    torch.manual_seed(0)
    torch.save(getattr(torchvision.models, args.arch)(weights=None).state_dict(), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    backbones.configure(
        {"b": backbones.BackboneSource("b", args.arch, str(weights), sha)}, root / "weights"
    )
    spec = ModelSpec.from_dict(
        {
            "name": "pretrained",
            "input_shape": [3, args.side, args.side],
            "num_classes": 10,
            "hparams": {"backbone": "b"},
        }
    )
    cache = TensorCache(root / "cache", 8 << 30)
    media = ["image/png"] * len(hashes)
    before = peak_rss_mib()

    # Compute floor: the same images already decoded, one forward pass in batches of 64.
    net, _ = backbones.backbone_for("b")
    net.eval()
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0)
    if args.side != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(args.side, args.side), mode="bilinear")
    t0 = time.perf_counter()
    with torch.no_grad():
        for part in x.split(64):
            net(part)
    floor = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = EmbeddingDataset(cache, blobs, hashes, media, spec).rows()
    fill = time.perf_counter() - t0
    after = peak_rss_mib()
    t0 = time.perf_counter()
    again = EmbeddingDataset(cache, blobs, hashes, media, spec).rows()
    hit = time.perf_counter() - t0
    k = len(hashes) // 10
    moved = hashes[k:] + hashes[:k]  # the next cycle's list: same items, another order
    t0 = time.perf_counter()
    EmbeddingDataset(cache, blobs, moved, media, spec).rows()
    copy = time.perf_counter() - t0
    assert np.array_equal(rows, again)
    load = os.getloadavg()
    print(
        f"{args.items} items {args.side}x{args.side}, {args.arch}, torch threads "
        f"{args.threads}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"  embedding size            {rows.shape[1]} float32")
    print(f"  row file                  {rows.nbytes / 2**20:.1f} MiB")
    ratio = fill / max(floor, 1e-9)
    print(f"  first fill (decode+embed) {fill:.2f} s")
    print(f"  bare forward pass         {floor:.2f} s over the images in memory ({ratio:.2f}x)")
    print(f"  same list again (hit)     {hit * 1000:.1f} ms")
    print(f"  next cycle's list (copy)  {copy * 1000:.1f} ms, 0 computed")
    print(f"  peak RSS                  {before:.0f} MiB before the fill, {after:.0f} MiB after")


if __name__ == "__main__":
    main()
