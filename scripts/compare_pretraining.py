"""Which pretraining method gives better features on a pool of this size, on this machine?

    python scripts/compare_pretraining.py --data ../shared/data/cifar10h.npz --items 5000 \\
        --simclr-epochs 20 --threads 1

On ``--items`` images of the file (a seeded draw), with no label read while fitting: SimCLR
of the small CNN's body (``worker/ml/ssl.py``, as a pretraining run does it) and k-means patch
features (``worker/ml/patch_kmeans.py``), each timed, and the untrained small CNN as the floor.
Each representation is judged by a linear probe: logistic regression on the true labels of
80 % of the items, accuracy on the other 20 % (features standardised on the 80 %). The probe
uses labels only to judge; it is the usual yardstick for self-supervised features.
Needs scikit-learn (in the ``test`` extra).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch.utils.data import TensorDataset

from worker.ml import patch_kmeans, ssl
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.sim.features import images_of
from worker.sim.protocol import data_path


def probe(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    n = len(labels)
    order = np.random.default_rng([seed, 9]).permutation(n)
    cut = int(0.8 * n)
    tr, te = order[:cut], order[cut:]
    mean, std = features[tr].mean(0), features[tr].std(0) + 1e-6
    x = (features - mean) / std
    clf = LogisticRegression(max_iter=500, C=0.01).fit(x[tr], labels[tr])
    return float(clf.score(x[te], labels[te]))


@torch.no_grad()
def body_features(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model.features(part) for part in torch.split(images, 500)]).numpy()  # type: ignore[operator]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="../shared/data/cifar10h.npz")
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--simclr-epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with np.load(data_path(args.data)) as npz:
        data = {k: npz[k] for k in ("images", "labels")}
    rows = np.sort(np.random.default_rng(args.seed).permutation(len(data["labels"]))[: args.items])
    images = images_of({"images": data["images"][rows]})
    labels = data["labels"][rows].astype(np.int64)
    spec = ModelSpec.from_dict(
        {"name": "small_cnn", "input_shape": list(images.shape[1:]), "num_classes": 10}
    )
    out: dict[str, dict[str, float]] = {}

    model = build_model(spec, args.seed)
    out["untrained small CNN"] = {"probe": probe(body_features(model, images), labels, args.seed)}

    t0 = time.perf_counter()
    config = ssl.PretrainConfig(epochs=args.simclr_epochs, seed=args.seed)
    state = ssl.pretrain(model.body, model.feature_dim, TensorDataset(images), config)
    out[f"SimCLR small CNN, {args.simclr_epochs} epochs"] = {
        "probe": probe(body_features(model, images), labels, args.seed),
        "seconds": time.perf_counter() - t0,
        "last_loss": state.losses[-1],
    }

    t0 = time.perf_counter()
    encoder = patch_kmeans.fit(images, patch_kmeans.PatchKMeansConfig(), args.seed)
    feats = patch_kmeans.encode(encoder, images).numpy()
    out["k-means patches (K = 800)"] = {
        "probe": probe(feats, labels, args.seed),
        "seconds": time.perf_counter() - t0,
    }
    print(json.dumps({"items": args.items, "threads": args.threads, "results": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
