"""Benchmark of the acquisition kernels against their reference computations.

    python -m worker.bench [--quick] [--json PATH] [--no-fail] [--threads N] [--data-dir DIR]

Every figure is measured in the same run on the same machine. Timings take the minimum of several
repeats after a warm-up; the one-sample loops (tens of seconds) run once after a warm-up.
Prints one table (check, measured, reference, ratio, target, PASS/FAIL) and exits non-zero if a
check fails, unless ``--no-fail``. ``--quick`` is a small CI smoke run: exactness, memory and
structure are judged, timings are printed but marked SMOKE (small pools are dominated by
per-call overheads and CI machines are noisy).

Data: ``mnist10k.npz`` / ``cifar10h.npz`` from ``--data-dir`` (default ``$ANNOLOOP_BENCH_DATA``,
else ``$ANNOLOOP_SHARED_DATA``, else ``shared/data`` beside the checkout); seeded random
images stand in when a file is missing (stated in the output). Models are ``build_model``
(small CNN, ResNet-18) with seed-0 random weights. The k-center memory check runs
``worker.bench_memory`` in a process of its own.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from worker.ml.data import TensorPool, one_hot
from worker.ml.ensemble import EnsembleModel, train_ensemble, train_member
from worker.ml.kernels import (
    DispersionRecorder,
    gradnorm_scores,
    gradnorm_scores_reference,
    greedy_k_center,
    greedy_k_center_reference,
    noise_deviations,
    noise_deviations_reference,
)
from worker.ml.models import build_model
from worker.ml.networks import build_network, objective_for
from worker.ml.spec import ModelSpec
from worker.ml.strategies.learning_loss import LearningLoss
from worker.ml.strategies.qbc import consensus_entropy, mutual_information, vote_entropy
from worker.ml.training import TrainConfig, train

BATCH = 256
# ResNet-18 batches stay small on the CPU: a batch's activations then fit in the caches.
BATCH_RESNET = 32


@dataclass
class Row:
    """One line of the result table; ratio = measured / reference."""

    check: str
    measured: str
    reference: str
    ratio: float | None
    target: str
    status: str  # PASS, FAIL, INFO or SMOKE
    value: float | None = None
    reference_value: float | None = None


@dataclass
class Config:
    quick: bool
    repeats: int
    device: torch.device
    data_dir: Path
    gn_cnn_n: int
    gn_resnet_n: int
    ns_n: int
    ns_k: int
    kc_big: tuple[int, int, int]
    kc_cmp: tuple[int, int, int]
    disp_n: int


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _min_time(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict:
    """Min over ``repeats`` runs of each function, interleaved so that load from other processes
    affects all of them alike; one untimed warm-up run each first."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], _time_once(fn, device))
    return best


def _judge(ok: bool, timing: bool, cfg: Config) -> str:
    if timing and cfg.quick:
        return "SMOKE"
    return "PASS" if ok else "FAIL"


def _ratio_row(
    check: str,
    measured: float,
    reference: float,
    ref_label: str,
    limit: float | None,
    cfg: Config,
    *,
    unit: str = "s",
    cmp: str = "<=",
) -> Row:
    ratio = measured / reference if reference > 0 else float("inf")
    if limit is None:
        target, status = "-", "INFO"
    else:
        target = f"{cmp} {limit:g}x"
        ok = ratio <= limit if cmp == "<=" else ratio < limit
        status = _judge(ok, unit == "s", cfg)
    return Row(
        check,
        f"{measured:.3f} {unit}",
        f"{ref_label} {reference:.3f} {unit}",
        ratio,
        target,
        status,
        measured,
        reference,
    )


def _load_images(cfg: Config, name: str, n: int, shape: tuple[int, int, int]) -> tuple[Tensor, str]:
    """(n, *shape) float32 images scaled to [0, 1], from the data file or seeded noise."""
    path = cfg.data_dir / name
    if path.exists():
        with np.load(path) as d:
            arr = d["images"][:n]
        x = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
        return x, f"{name}[:{n}]"
    g = torch.Generator().manual_seed(0)
    return torch.rand((n, *shape), generator=g), f"random images ({name} not found)"


def _batches(x: Tensor) -> list[Tensor]:
    return list(x.split(BATCH))


def _model(name: str, shape: tuple[int, int, int], device: torch.device) -> nn.Module:
    return build_model(ModelSpec(name, shape, 10), seed=0).to(device).eval()


def _forward_backward(model: nn.Module, batches: list[Tensor]) -> Callable[[], None]:
    """One plain batched forward + backward (eval mode, CE on fixed labels) over the batches."""

    def run() -> None:
        for x in batches:
            labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            F.cross_entropy(model(x), labels).backward()
        model.zero_grad(set_to_none=True)

    return run


def _eval_passes(model: nn.Module, batches: list[Tensor], passes: int) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            for _ in range(passes):
                for x in batches:
                    model(x)

    return run


def _rel_err(got: Tensor, want: Tensor) -> float:
    return float(((got - want).abs() / want.abs().clamp_min(1e-12)).max())


# --------------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------------


def bench_gradnorm(cfg: Config) -> list[Row]:
    dev = cfg.device
    rows: list[Row] = []
    x, src = _load_images(cfg, "mnist10k.npz", cfg.gn_cnn_n, (1, 28, 28))
    batches = _batches(x.to(dev))
    model = _model("small_cnn", (1, 28, 28), dev)
    scores: dict[str, Tensor] = {}

    def batched() -> None:
        scores["batched"] = gradnorm_scores(model, batches, "expected")

    t = _min_time({"fb": _forward_backward(model, batches), "batched": batched}, cfg.repeats, dev)
    gradnorm_scores_reference(model, [batches[0][:8]], "expected")  # warm-up
    t_loop = _time_once(
        lambda: scores.__setitem__("loop", gradnorm_scores_reference(model, batches, "expected")),
        dev,
    )
    what = f"small CNN, {x.shape[0]} imgs ({src}), bs {BATCH}"
    rows.append(
        _ratio_row(
            f"gradnorm batched / fwd+bwd [{what}]", t["batched"], t["fb"], "fwd+bwd", 2.5, cfg
        )
    )
    rows.append(
        _ratio_row("gradnorm 1-sample loop / fwd+bwd", t_loop, t["fb"], "fwd+bwd", None, cfg)
    )
    err = _rel_err(scores["batched"], scores["loop"])
    entropy_err = _rel_err(
        gradnorm_scores(model, batches[:1], "entropy"),
        gradnorm_scores_reference(model, batches[:1], "entropy"),
    )
    err = max(err, entropy_err)
    rows.append(
        Row(
            "gradnorm max rel. error vs loop (both schemes)",
            f"{err:.2e}",
            "-",
            None,
            "<= 1e-4",
            _judge(err <= 1e-4, False, cfg),
            err,
        )
    )

    rows.extend(_bench_gradnorm_resnet(cfg))
    return rows


def _bench_gradnorm_resnet(cfg: Config) -> list[Row]:
    """ResNet-18 on 32x32 images: batched against the one-sample loop.

    The loop takes tens of seconds, too long to repeat; instead the three computations take
    turns batch by batch, so load from other processes falls on all of them alike.
    """
    dev = cfg.device
    x, src = _load_images(cfg, "cifar10h.npz", cfg.gn_resnet_n, (3, 32, 32))
    batches = list(x.to(dev).split(BATCH_RESNET))
    model = _model("resnet18", (3, 32, 32), dev)
    gradnorm_scores(model, [batches[0][:4]], "expected")  # warm-up
    gradnorm_scores_reference(model, [batches[0][:2]], "expected")
    _forward_backward(model, [batches[0][:4]])()
    total = {"batched": 0.0, "loop": 0.0, "fb": 0.0}
    got: list[Tensor] = []
    want: list[Tensor] = []
    for b in batches:

        def batched(b: Tensor = b) -> None:
            got.append(gradnorm_scores(model, [b], "expected"))

        def loop(b: Tensor = b) -> None:
            want.append(gradnorm_scores_reference(model, [b], "expected"))

        total["batched"] += _time_once(batched, dev)
        total["loop"] += _time_once(loop, dev)
        total["fb"] += _time_once(_forward_backward(model, [b]), dev)
    what = f"ResNet-18, {x.shape[0]} imgs ({src}), bs {BATCH_RESNET}"
    rows = [
        _ratio_row(
            f"gradnorm batched / loop [{what}]",
            total["batched"],
            total["loop"],
            "loop",
            1.0,
            cfg,
            cmp="<",
        ),
        _ratio_row(
            "gradnorm ResNet-18 batched / fwd+bwd",
            total["batched"],
            total["fb"],
            "fwd+bwd",
            None,
            cfg,
        ),
    ]
    # Exactness in float64: at random initialisation the softmax is nearly uniform, where the
    # loss gradient is ill-conditioned and float32 rounding alone moves scores by ~1e-4 (the
    # loop's own float32 error is as large as the batched one's, see the next row).
    sub = batches[0][:8].double()
    model64 = copy.deepcopy(model).double()
    truth = gradnorm_scores_reference(model64, [sub], "expected")
    err64 = _rel_err(gradnorm_scores(model64, [sub], "expected"), truth)
    err32_b = _rel_err(torch.cat(got)[:8].double(), truth)
    err32_l = _rel_err(torch.cat(want)[:8].double(), truth)
    rows.append(
        Row(
            "gradnorm ResNet-18 max rel. error vs loop, float64, 8 imgs",
            f"{err64:.2e}",
            "-",
            None,
            "<= 1e-4",
            _judge(err64 <= 1e-4, False, cfg),
            err64,
        )
    )
    rows.append(
        Row(
            "gradnorm ResNet-18 float32 max rel. error vs float64: batched (loop)",
            f"{err32_b:.2e}",
            f"loop {err32_l:.2e}",
            None,
            "-",
            "INFO",
            err32_b,
            err32_l,
        )
    )
    err_all = _rel_err(torch.cat(got), torch.cat(want))
    rows.append(
        Row(
            f"gradnorm ResNet-18 float32 max rel. diff batched vs loop, {x.shape[0]} imgs",
            f"{err_all:.2e}",
            "-",
            None,
            "-",
            "INFO",
            err_all,
        )
    )
    return rows


def bench_noise(cfg: Config) -> list[Row]:
    dev = cfg.device
    k = cfg.ns_k
    x, src = _load_images(cfg, "mnist10k.npz", cfg.ns_n, (1, 28, 28))
    batches = _batches(x.to(dev))
    model = _model("small_cnn", (1, 28, 28), dev)
    out: dict[str, Tensor] = {}

    def fast() -> None:
        out["fast"] = noise_deviations(model, batches, num_samples=k, seed=0)

    def ref() -> None:
        out["ref"] = noise_deviations_reference(model, batches, num_samples=k, seed=0)

    t = _min_time(
        {"passes": _eval_passes(model, batches, k + 1), "fast": fast, "ref": ref}, cfg.repeats, dev
    )
    what = f"small CNN, K={k}, {x.shape[0]} imgs ({src}), bs {BATCH}"
    err = float((out["fast"] - out["ref"]).abs().max() / out["ref"].abs().max())
    return [
        _ratio_row(
            f"noise stability / {k + 1} eval passes [{what}]",
            t["fast"],
            t["passes"],
            f"{k + 1} passes",
            1.15,
            cfg,
        ),
        _ratio_row(
            "noise stability deep-copy reference / eval passes",
            t["ref"],
            t["passes"],
            f"{k + 1} passes",
            None,
            cfg,
        ),
        Row(
            "noise stability max |diff| vs reference (rel. to max |dev|)",
            f"{err:.2e}",
            "-",
            None,
            "<= 1e-5",
            _judge(err <= 1e-5, False, cfg),
            err,
        ),
    ]


def bench_kcenter(cfg: Config) -> list[Row]:
    rows: list[Row] = []
    n, d, b = cfg.kc_big
    # A process of its own: see worker/bench_memory.py.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.bench_memory",
            *(str(v) for v in (n, d, b, torch.get_num_threads())),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    delta_mib = probe["delta_kib"] / 1024
    rows.append(
        Row(
            f"k-center peak RSS increase [N={n}, D={d}, B={b}; {probe['method']}]",
            f"{delta_mib:.1f} MiB",
            f"features {probe['features_mib']:.0f} MiB; an NxN matrix {n * n * 4 / 2**30:.1f} GiB",
            None,
            "< 1024 MiB",
            _judge(delta_mib < 1024, False, cfg),
            delta_mib,
        )
    )
    rows.append(
        Row(
            f"k-center time [N={n}, D={d}, B={b}]",
            f"{probe['seconds']:.3f} s",
            "-",
            None,
            "-",
            "INFO",
            probe["seconds"],
        )
    )

    n, d, b = cfg.kc_cmp
    x = torch.randn((n, d), generator=torch.Generator().manual_seed(1))
    picks: dict[str, Tensor] = {}
    t = _min_time(
        {
            "fast": lambda: picks.__setitem__("fast", greedy_k_center(x, b)),
            "ref": lambda: picks.__setitem__("ref", greedy_k_center_reference(x, b)),
        },
        cfg.repeats,
        torch.device("cpu"),
    )
    rows.append(
        _ratio_row(
            f"k-center / full-matrix reference [N={n}, D={d}, B={b}]",
            t["fast"],
            t["ref"],
            "full matrix",
            1.0,
            cfg,
            cmp="<",
        )
    )
    same = bool(torch.equal(picks["fast"], picks["ref"]))
    rows.append(
        Row(
            "k-center picks identical to the reference",
            str(same),
            "-",
            None,
            "True",
            _judge(same, False, cfg),
        )
    )
    return rows


class _Pool:
    """A pool object with ``batches()`` and ``__len__``, counting the forward passes it feeds."""

    def __init__(self, batches: list[Tensor]) -> None:
        self._batches = batches
        self.passes = 0

    def __len__(self) -> int:
        return sum(b.shape[0] for b in self._batches)

    def batches(self) -> Iterator[Tensor]:
        self.passes += 1
        yield from self._batches


def bench_dispersion(cfg: Config) -> list[Row]:
    dev = cfg.device
    x, src = _load_images(cfg, "mnist10k.npz", cfg.disp_n, (1, 28, 28))
    batches = _batches(x.to(dev))
    model = _model("small_cnn", (1, 28, 28), dev).train()
    pool = _Pool(batches)
    recorder = DispersionRecorder(pool, num_classes=10)

    def one_pass() -> None:
        model.eval()
        with torch.no_grad():
            for b in batches:
                model(b)
        model.train()

    epoch = iter(range(10**9))
    t = _min_time(
        {"pass": one_pass, "record": lambda: recorder(next(epoch), model)}, cfg.repeats, dev
    )
    passes_per_epoch = pool.passes / len(recorder.epochs)
    what = f"small CNN, {x.shape[0]} imgs ({src})"
    return [
        _ratio_row(
            f"dispersion recording / 1 eval pass [{what}]",
            t["record"],
            t["pass"],
            "1 eval pass",
            1.10,
            cfg,
        ),
        Row(
            "dispersion forward passes over the pool per recorded epoch",
            f"{passes_per_epoch:g}",
            "-",
            None,
            "<= 1",
            _judge(passes_per_epoch <= 1, False, cfg),
            passes_per_epoch,
        ),
    ]


def bench_ensemble(cfg: Config) -> list[Row]:
    """Deep-ensemble cost against its floor: M members cost M trainings and M eval passes;
    the assembling, the mean and the scores may add 10 %."""
    dev = cfg.device
    m, n_train, n_pool, epochs = (2, 16, 32, 1) if cfg.quick else (5, 200, cfg.disp_n, 3)
    x, src = _load_images(cfg, "mnist10k.npz", n_train + n_pool, (1, 28, 28))
    labels = np.random.default_rng(0).integers(0, 10, n_train)
    train_set = TensorDataset(x[:n_train], torch.from_numpy(one_hot(labels, 10)))
    spec = ModelSpec("small_cnn", (1, 28, 28), 10, {"epochs": epochs, "batch_size": 32})
    config = TrainConfig.from_hparams(spec.hparams)
    repeats = 1 if cfg.quick else max(1, min(cfg.repeats, 3))
    t = _min_time(
        {
            "one": lambda: train_member(spec, train_set, config, seed=0, member=0, device=dev),
            "ensemble": lambda: train_ensemble(
                spec, train_set, config, seed=0, members=m, device=dev
            ),
        },
        repeats,
        dev,
    )
    ensemble, _ = train_ensemble(spec, train_set, config, seed=0, members=m, device=dev)
    pool = TensorPool(x[n_train:].to(dev), BATCH)
    single = ensemble.members[0]

    def one_pass() -> None:
        single.eval()
        with torch.no_grad():
            for b in pool.batches():
                torch.softmax(single(b), dim=1)

    def score_all(model: EnsembleModel = ensemble) -> None:
        model.eval()
        with torch.no_grad():
            probs = np.concatenate([model.member_probs(b).cpu().numpy() for b in pool.batches()])
        vote_entropy(probs), consensus_entropy(probs), mutual_information(probs)

    s = _min_time({"pass": one_pass, "score": score_all}, repeats, dev)
    what = f"small CNN, M={m}, {n_train} train / {n_pool} pool imgs ({src})"
    return [
        _ratio_row(
            f"ensemble training / (M x one training) [{what}]",
            t["ensemble"],
            m * t["one"],
            f"{m} x one training",
            1.10,
            cfg,
        ),
        _ratio_row(
            f"ensemble scoring, 3 scores / (M x 1 eval pass) [{what}]",
            s["score"],
            m * s["pass"],
            f"{m} x 1 eval pass",
            1.10,
            cfg,
        ),
    ]


def bench_learning_loss(cfg: Config) -> list[Row]:
    """Learning loss: training the network with its loss module against training it alone
    (the floor); the module reads features the network computes anyway, so the extra is its
    small MLP and the ranking loss (target 1.3x)."""
    dev = cfg.device
    n_train, epochs = (16, 1) if cfg.quick else (200, 3)
    x, src = _load_images(cfg, "mnist10k.npz", n_train, (1, 28, 28))
    labels = np.random.default_rng(0).integers(0, 10, n_train)
    train_set = TensorDataset(x, torch.from_numpy(one_hot(labels, 10)))
    spec = ModelSpec("small_cnn", (1, 28, 28), 10, {"epochs": epochs, "batch_size": 32})
    config = TrainConfig.from_hparams(spec.hparams)
    strategy = LearningLoss()
    repeats = 1 if cfg.quick else max(1, min(cfg.repeats, 3))
    t = _min_time(
        {
            "plain": lambda: train(build_model(spec, 0), train_set, config, seed=0, device=dev),
            "lossnet": lambda: train(
                build_network(strategy, spec, 0),
                train_set,
                config,
                seed=0,
                device=dev,
                objective=objective_for(strategy, config),
            ),
        },
        repeats,
        dev,
    )
    what = f"small CNN, {n_train} imgs x {epochs} epochs ({src})"
    return [
        _ratio_row(
            f"learning-loss training / plain training [{what}]",
            t["lossnet"],
            t["plain"],
            "plain training",
            1.30,
            cfg,
        )
    ]


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def _bench_cycle(cfg: Config) -> list[Row]:
    from worker.bench_cycle import bench_cycle  # imports the app: only when asked for

    return bench_cycle(cfg)


def _print_table(rows: list[Row]) -> None:
    headers = ("check", "measured", "reference", "ratio", "target", "result")
    cells = [
        (
            r.check,
            r.measured,
            r.reference,
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
            r.status,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def _config(args: argparse.Namespace) -> Config:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the checkout
    setting = os.environ.get("ANNOLOOP_BENCH_DATA") or os.environ.get("ANNOLOOP_SHARED_DATA")
    data_dir = Path(args.data_dir or setting or default)
    device = torch.device(args.device)
    if args.quick:
        return Config(
            True, 2, device, data_dir, 256, 8, 256, 4, (5000, 300, 100), (2000, 300, 100), 256
        )
    return Config(
        False,
        args.repeats,
        device,
        data_dir,
        2000,
        256,
        2000,
        30,
        (50_000, 300, 1_000),
        (10_000, 300, 1_000),
        2000,
    )


def main(argv: list[str] | None = None) -> int:
    from worker.bench_generative import bench_generative  # imports this module back
    from worker.bench_selection import bench_selection  # imports this module back

    parser = argparse.ArgumentParser(
        prog="python -m worker.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small CI smoke run")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a check fails")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats, min is taken")
    parser.add_argument("--device", default="cpu", help="device for the model kernels")
    parser.add_argument("--data-dir", help="folder with mnist10k.npz and cifar10h.npz")
    parser.add_argument(
        "--only",
        choices=[
            "gradnorm",
            "noise",
            "kcenter",
            "dispersion",
            "selection",
            "ensemble",
            "learning_loss",
            "generative",
            "cycle",
        ],
        action="append",
        help="run only these sections (repeatable); `cycle` (a real worker cycle against "
        "bare PyTorch, worker/bench_cycle.py) runs only when named",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = _config(args)
    sections: dict[str, Callable[[Config], list[Row]]] = {
        "gradnorm": bench_gradnorm,
        "noise": bench_noise,
        "kcenter": bench_kcenter,
        "dispersion": bench_dispersion,
        "ensemble": bench_ensemble,
        "learning_loss": bench_learning_loss,
        "selection": bench_selection,
        "generative": bench_generative,
        "cycle": _bench_cycle,
    }
    header = (
        f"annoloop kernel benchmark: torch {torch.__version__}, device {cfg.device}, "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, "
        f"{'quick' if cfg.quick else 'full'}, timings = min of {cfg.repeats} after warm-up"
    )
    print(header, flush=True)
    rows: list[Row] = []
    for name, fn in sections.items():
        if (args.only and name not in args.only) or (not args.only and name == "cycle"):
            continue
        start = time.perf_counter()
        section = fn(cfg)
        rows.extend(section)
        print(f"  {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    _print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
        )
    failed = [r for r in rows if r.status == "FAIL"]
    if failed:
        print(f"{len(failed)} check(s) FAILED", file=sys.stderr)
    return 1 if failed and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
