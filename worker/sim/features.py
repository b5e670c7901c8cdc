"""Unsupervised features of a data file's images, for the ``*-features`` cleaning protocols.

    python -m worker.sim.features --data ../shared/data/cifar10h.npz --method kmeans \\
        --out cifar10h-kmeans.npz

The encoder is fitted with no label read on every image of the file, or with ``--pool-of
PROTOCOL`` on that acquisition protocol's pool rows only (so no test image shapes it), as a
project's pretraining run sees its pool; then every image is encoded. The output holds
``features`` (N, F) float32 in the file's row order and the file's ``labels``/``counts``
copied, so a protocol reads it as it reads the original (``--data OUT``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from worker.ml import patch_kmeans
from worker.sim.protocol import PROTOCOLS, data_path, split

METHODS = ("kmeans",)


def images_of(data: dict[str, np.ndarray], key: str = "images") -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    x = torch.from_numpy(np.asarray(data[key]))
    if x.ndim == 3:
        x = x[:, :, :, None]
    return x.permute(0, 3, 1, 2).float() / 255.0


def embed(
    images: torch.Tensor,
    method: str,
    seed: int,
    config: patch_kmeans.PatchKMeansConfig | None = None,
    fit_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, object]]:
    """(N, C, H, W) -> features (N, F) float32 and what produced them; the encoder is fitted
    on ``fit_rows`` (default: all)."""
    if method != "kmeans":
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    config = config or patch_kmeans.PatchKMeansConfig()
    t0 = time.perf_counter()
    fit_on = images if fit_rows is None else images[torch.from_numpy(fit_rows)]
    encoder = patch_kmeans.fit(fit_on, config, seed)
    fit_s = time.perf_counter() - t0
    feats = patch_kmeans.encode(encoder, images).numpy()
    meta = {
        "method": method,
        "config": config.to_dict(),
        "seed": seed,
        "fitted_on": len(fit_on),
        "fit_s": fit_s,
        "encode_s": time.perf_counter() - t0 - fit_s,
    }
    return feats.astype(np.float32), meta


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worker.sim.features", description=__doc__)
    p.add_argument("--data", required=True, help="an .npz with uint8 `images`")
    p.add_argument("--method", choices=METHODS, default="kmeans")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--centroids", type=int, default=patch_kmeans.PatchKMeansConfig.centroids)
    p.add_argument("--patches", type=int, default=patch_kmeans.PatchKMeansConfig.patches)
    p.add_argument("--pool-of", choices=sorted(PROTOCOLS), default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with np.load(data_path(args.data)) as npz:
        data = {k: npz[k] for k in npz.files}
    config = patch_kmeans.PatchKMeansConfig(centroids=args.centroids, patches=args.patches)
    rows = None
    if args.pool_of:
        rows, _ = split(PROTOCOLS[args.pool_of], len(data["images"]))
    feats, meta = embed(images_of(data), args.method, args.seed, config, rows)
    kept = {k: v for k, v in data.items() if k not in ("images",)}
    np.savez(args.out, features=feats, meta=np.array(json.dumps(meta)), **kept)
    print(json.dumps({**meta, "features": list(feats.shape)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
