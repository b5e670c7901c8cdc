"""``annoloop bench`` section ``selection``: issue 18's strategies against their floors.

- EGL (every parameter) against the batched expected gradnorm on the same model and images: it
  runs one forward and C backward passes per batch where gradnorm runs one of each, so its floor
  is C x gradnorm; the check is <= C x. Exactness: against the one-sample loop on a few images.
- EGL (head only) and EMOC against one plain evaluation pass (features + posteriors), the floor
  of anything that reads the model's outputs.
- TypiClust, ProbCover, suggestive annotation and DAL (the last two not in ``--quick``): the
  time of ``choose`` on N features, next to greedy k-center (core-set) on the same features;
  judged only on giving B distinct picks: their cost is the method's own global step, with no
  faster reference to hold it to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from worker.ml.evaluation import predict_features_and_proba
from worker.ml.kernels import gradnorm_scores
from worker.ml.kernels.egl import egl_scores, egl_scores_reference
from worker.ml.kernels.kcenter import greedy_k_center
from worker.ml.strategies import ScoringContext, get_strategy

if TYPE_CHECKING:
    from worker.bench import Config, Row


class _Pool:
    def __init__(self, batches: list[Tensor]) -> None:
        self._batches = batches

    def __len__(self) -> int:
        return sum(len(b) for b in self._batches)

    def batches(self) -> Iterator[Tensor]:
        yield from self._batches


def bench_selection(cfg: Config) -> list[Row]:
    from worker.bench import BATCH, Row, _judge, _load_images, _min_time, _model, _ratio_row

    dev = cfg.device
    n = 16 if cfg.quick else 512
    x, src = _load_images(cfg, "mnist10k.npz", n, (1, 28, 28))
    batches = list(x.to(dev).split(BATCH))
    model = _model("small_cnn", (1, 28, 28), dev)
    pool = _Pool(batches)
    classes = 10
    ctx = ScoringContext(model, pool, None, dev, 0, BATCH)  # type: ignore[arg-type]
    head = get_strategy("egl", scope="head")
    emoc = get_strategy("emoc")

    def emoc_all() -> None:
        emoc.choose(emoc.compute(ctx), 20, 0)

    t = _min_time(
        {
            "gradnorm": lambda: gradnorm_scores(model, batches, "expected"),
            "egl": lambda: egl_scores(model, batches),
            "eval": lambda: predict_features_and_proba(model, pool, dev),
            "egl_head": lambda: head.compute(ctx),
            "emoc": emoc_all,
        },
        max(1, cfg.repeats // 2),
        dev,
    )
    what = f"small CNN, {n} imgs ({src}), C={classes}"
    rows = [
        _ratio_row(
            f"EGL batched / gradnorm batched [{what}]",
            t["egl"],
            t["gradnorm"],
            "gradnorm",
            float(classes),
            cfg,
        ),
        _ratio_row("EGL head / one eval pass", t["egl_head"], t["eval"], "eval", 1.5, cfg),
        _ratio_row("EMOC (reference 1000) / one eval pass", t["emoc"], t["eval"], "eval", 3.0, cfg),
    ]
    few = [batches[0][:8]]
    err = float(
        ((egl_scores(model, few) - egl_scores_reference(model, few)).abs()).max()
        / egl_scores_reference(model, few).abs().min()
    )
    rows.append(
        Row(
            "EGL max rel. error vs one-sample loop",
            f"{err:.2e}",
            "-",
            None,
            "<= 1e-4",
            _judge(err <= 1e-4, False, cfg),
            err,
        )
    )
    rows.extend(_choose_rows(cfg, _judge, Row))
    return rows


def _choose_rows(cfg: Config, judge: Callable[..., str], row: type[Row]) -> list[Row]:
    """choose() of the embedding strategies on random features, against greedy k-center."""
    n, m, d, b = (200, 30, 16, 5) if cfg.quick else (1000, 100, 128, 20)
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(n, d, generator=g).abs().numpy()
    lab = torch.randn(m, d, generator=g).abs().numpy()
    targets = np.eye(10)[np.arange(m) % 10]
    rows = []
    start = time.perf_counter()
    greedy_k_center(torch.from_numpy(feats), b, torch.from_numpy(lab))
    base = time.perf_counter() - start
    cases: dict[str, tuple[dict[str, object], dict[str, np.ndarray], dict[str, np.ndarray]]] = {
        "typiclust": ({}, {"features": feats}, {"features": lab}),
        "probcover": (
            {},
            {"features": feats, "classes": np.full(n, 10, np.int16)},
            {"features": lab},
        ),
        "suggestive": (
            {},
            {"features": feats},
            {"features": lab, "targets": targets},
        ),
        # The reference's 1000 epochs x 20 rounds is minutes per batch on a CPU: a bounded
        # setting here, so the figure says what one round of the method costs.
        "discriminative": (
            {"max_epochs": 100, "mini_queries": 4},
            {"features": feats},
            {"features": lab},
        ),
    }
    if cfg.quick:  # the smoke run keeps to the cheap ones; tests/ml checks the others
        cases = {k: v for k, v in cases.items() if k in ("typiclust", "probcover")}
    for name, (params, arrays, labelled) in cases.items():
        strategy = get_strategy(name, **params)
        start = time.perf_counter()
        sel = strategy.choose(arrays, b, 0, labelled)
        took = time.perf_counter() - start
        ok = len(set(sel.indices.tolist())) == b
        rows.append(
            row(
                f"{name} choose [N={n}, M={m}, D={d}, B={b}{', ' + str(params) if params else ''}]",
                f"{took:.3f} s",
                f"k-center {base:.3f} s",
                took / base if base > 0 else None,
                "B distinct picks",
                judge(ok, False, cfg),
                took,
                base,
            )
        )
    return rows
