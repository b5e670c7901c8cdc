"""Dawid–Skene speed: annoloop's numpy EM against crowd-kit's on the same votes, in one run.

    .venv/bin/python scripts/bench_aggregation.py [--votes 100000] [--repeat 3]

Prints seconds for 100 EM iterations of each (best of ``--repeat``), the ratio, and the
agreement of their labels; exits 1 when annoloop's is slower than crowd-kit's (the reference
measured in the same run, so machine load cancels out).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from app.annotations.aggregation import aggregate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--votes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    n, a, c = args.votes // 5, 200, 10
    rng = np.random.default_rng(0)
    truth = rng.integers(0, c, n)
    skill = rng.uniform(0.2, 0.95, a)
    items = rng.integers(0, n, args.votes)
    annotators = rng.integers(0, a, args.votes)
    right = rng.random(args.votes) < skill[annotators]
    classes = np.where(right, truth[items], rng.integers(0, c, args.votes))
    frame = pd.DataFrame({"task": items, "worker": annotators, "label": classes})

    ours = theirs = np.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = aggregate(
            "dawid_skene", items, annotators, classes,
            num_items=n, num_annotators=a, num_classes=c, max_iter=100, tol=0.0,
        )  # fmt: skip
        ours = min(ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = DawidSkene(n_iter=100, tol=0.0).fit_predict(frame)
        theirs = min(theirs, time.perf_counter() - t0)
    voted = np.flatnonzero(result.label >= 0)
    agree = float((result.label[voted] == ref.reindex(voted).to_numpy()).mean())
    print(f"votes {args.votes}, items {n}, annotators {a}, classes {c}, 100 EM iterations")
    print(f"annoloop  {ours:8.3f} s")
    print(f"crowd-kit {theirs:8.3f} s")
    print(f"speed-up  {theirs / ours:8.1f}x   label agreement {agree:.4f}")
    return 0 if ours <= theirs else 1


if __name__ == "__main__":
    sys.exit(main())
