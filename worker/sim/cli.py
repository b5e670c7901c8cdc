"""``annoloop simulate``: run a protocol for strategies x seeds, write results.json and plots.

    annoloop simulate --protocol mnist-fast --mode direct --strategies random,entropy \\
        --seeds 0,1 --out sim-out
    annoloop simulate --protocol tiny --mode api                 # starts ``annoloop up`` itself
    annoloop simulate --protocol tiny --mode api --url http://host:8000 --token T
    annoloop simulate --protocol cifar10h-clean-t2 --threads 1 --out clean-t2   # label cleaning

Acquisition protocols: mnist, mnist-fast, tiny, music-al (worker.sim.music_al: real crowd
answers as the oracle; every registered strategy by default) and music-al-exact (the same with
true labels). A strategy the protocol's model cannot serve (learning_loss on an mlp) is skipped
with the API's reason in results.json's meta.not_applicable.

Label-cleaning protocols (direct mode only; --strategies names the selectors random, oracle,
ce_minus_entropy, joint and the out-of-sample ce_minus_entropy_oof, joint_oof):
cifar10h-clean-t2, cifar10h-clean-t10, cifar10h-clean-fast, music-clean. music-aggregation
runs worker.sim.aggregation's study on the music answers. music-mixed (worker.sim.mixed: one
mixed queue vs separate budgets; --strategies names selectors, --cycles rounds) and
music-adaptive (worker.sim.adaptive: labels per item; --strategies names rules) run on the
music answers too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from worker.ml.strategy_params import ParamsError, check_model_fits
from worker.sim.adaptive import ADAPTIVE_PROTOCOLS, main_adaptive
from worker.sim.api import Server, local_server, run_api
from worker.sim.cleaning import (
    CLEANING_PROTOCOLS,
    SELECTORS,
    CleaningProtocol,
    CleaningRun,
    on_grid,
    run_cleaning,
    summary,
    versus,
)
from worker.sim.direct import run_direct
from worker.sim.mixed import MIXED_PROTOCOLS, main_mixed
from worker.sim.music import MUSIC, MUSIC_PROTOCOLS
from worker.sim.music_al import MUSIC_AL_PROTOCOLS
from worker.sim.protocol import (
    PROTOCOLS,
    Arrays,
    Protocol,
    base_strategy,
    data_path,
    load_arrays,
)
from worker.sim.record import RunRecord
from worker.sim.report import curves, markdown_table, plot, write_json

ACQUISITION = {**PROTOCOLS, **MUSIC_AL_PROTOCOLS}
CLEANING = {**CLEANING_PROTOCOLS, **MUSIC_PROTOCOLS}
AGGREGATION = "music-aggregation"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


P = TypeVar("P", Protocol, CleaningProtocol)


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="annoloop simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--protocol",
        choices=[
            *sorted(ACQUISITION),
            *sorted(CLEANING),
            AGGREGATION,
            *sorted(MIXED_PROTOCOLS),
            *sorted(ADAPTIVE_PROTOCOLS),
        ],
        default="mnist-fast",
    )
    p.add_argument("--mode", choices=["direct", "api"], default="direct")
    p.add_argument("--strategies", type=_names, default=None, help="default: the protocol's")
    p.add_argument("--seeds", type=_ints, default=None, help="default: the protocol's")
    p.add_argument("--cycles", type=int, default=None, help="override the protocol's")
    p.add_argument("--data", default=None, help="override the protocol's .npz path")
    p.add_argument("--out", type=Path, default=Path("sim-out"))
    p.add_argument("--url", default=None, help="api mode: a running server (else one is started)")
    p.add_argument("--token", default=None, help="api mode: an admin token for --url")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in OUT/results.json and run only the missing ones",
    )
    return p.parse_args(list(argv))


def protocol_from(args: argparse.Namespace) -> Protocol:
    proto = ACQUISITION[args.protocol]
    data = replace(proto.data, path=args.data) if args.data else None
    return proto.with_overrides(
        strategies=args.strategies,
        seeds=args.seeds,
        cycles=args.cycles,
        data=data,
    )


def _earlier_runs(path: Path, proto: Protocol) -> tuple[list[RunRecord], float]:
    """Runs of ``proto`` already in ``path`` (none if it does not exist) and their wall time."""
    if not path.exists():
        return [], 0.0
    doc = json.loads(path.read_text())
    if doc["meta"].get("protocol") != proto.name or doc["meta"].get("model") != proto.model:
        raise SystemExit(f"--resume: {path} holds another protocol or model; use a new --out")
    runs = [RunRecord.from_json(r) for r in doc["runs"]]
    wanted = set(proto.strategies)
    return [r for r in runs if r.strategy in wanted], float(doc["meta"].get("wall_s", 0.0))


def not_applicable(proto: Protocol) -> dict[str, str]:
    """Strategy -> why the protocol's model cannot serve it: the reason the API gives with its
    422 at cycle creation (``check_model_fits``). An unknown name is not caught here: it fails
    as an error (ParamsError without a key)."""
    out: dict[str, str] = {}
    for strategy in proto.strategies:
        try:
            check_model_fits("acquire", base_strategy(strategy), proto.model)
        except ParamsError as exc:
            if exc.key is None:
                raise SystemExit(str(exc)) from None
            out[strategy] = str(exc)
    return out


@contextmanager
def _server(args: argparse.Namespace) -> Iterator[Server]:
    if args.url:
        if not args.token:
            raise SystemExit("--url needs --token")
        yield Server(args.url.rstrip("/"), args.token)
        return
    with (
        tempfile.TemporaryDirectory(prefix="annoloop-sim-") as tmp,
        local_server(Path(tmp), args.out / "server.log") as server,
    ):
        yield server


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.protocol in CLEANING:
        return main_cleaning(args)
    if args.protocol == AGGREGATION:
        return main_aggregation(args)
    if args.protocol in MIXED_PROTOCOLS:
        return main_mixed(args)
    if args.protocol in ADAPTIVE_PROTOCOLS:
        return main_adaptive(args)
    proto = protocol_from(args)
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = load_arrays(proto.data)
    proto = with_input_shape(proto, arrays)
    runs, earlier_s = _earlier_runs(args.out / "results.json", proto) if args.resume else ([], 0.0)
    done = {(r.strategy, r.seed) for r in runs}
    t0 = time.perf_counter() - earlier_s  # wall_s counts the earlier process's time too
    meta: dict[str, object] = {"protocol": proto.name, "mode": args.mode, "model": proto.model}
    meta.update(
        data=proto.data.path,
        oracle=proto.oracle,
        initial=proto.initial_size or f"{proto.initial_per_class} per class",
        batch_size=proto.batch_size,
        cycles=proto.cycles,
        candidates=proto.candidates,
    )
    skipped = not_applicable(proto)
    if skipped:
        meta["not_applicable"] = skipped
    for strategy, reason in skipped.items():
        print(f"{strategy}: not applicable: {reason}", flush=True)
    with ExitStack() as stack:
        if args.mode == "api":
            server = stack.enter_context(_server(args))
        # Seed-major, and the JSON rewritten after every run: a run cut short still leaves
        # every strategy's results for the seeds it completed.
        for seed in proto.seeds:
            for strategy in proto.strategies:
                if (strategy, seed) in done or strategy in skipped:
                    continue
                if args.mode == "api":
                    run = run_api(server, proto, strategy, seed, arrays)
                else:
                    run = run_direct(proto, strategy, seed, arrays)
                runs.append(run)
                accs = " ".join(f"{c.labels}:{c.accuracy:.3f}" for c in run.cycles)
                print(f"{strategy} seed {seed}: {accs}", flush=True)
                meta["wall_s"] = time.perf_counter() - t0
                write_json(runs, args.out / "results.json", meta)
    meta["wall_s"] = time.perf_counter() - t0
    doc = write_json(runs, args.out / "results.json", meta)
    plot(runs, args.out / "accuracy", f"{proto.name} ({args.mode})")
    (args.out / "results.md").write_text(markdown_table(doc))
    for strategy, area in doc["aubc"].items():
        print(f"AUBC {strategy}: {area['mean']:.4f} ± {area['std']:.4f}")
    print(f"wrote {args.out}/results.json, results.md, accuracy.png, accuracy.svg")
    return 0


def cleaning_protocol_from(args: argparse.Namespace) -> CleaningProtocol:
    if args.mode != "direct" or args.url or args.cycles is not None or args.resume:
        raise SystemExit(f"{args.protocol} runs in direct mode only, without --cycles or --resume")
    unknown = set(args.strategies or ()) - set(SELECTORS)
    if unknown:
        raise SystemExit(f"unknown selectors {sorted(unknown)}; choose from {list(SELECTORS)}")
    proto = CLEANING[args.protocol]
    data = replace(proto.data, path=args.data) if args.data else None
    return proto.with_overrides(selectors=args.strategies, seeds=args.seeds, data=data)


def with_input_shape(proto: P, arrays: Arrays) -> P:
    """A protocol whose model leaves ``input_shape`` out reads it from the data (a features
    file's width)."""
    if "input_shape" in proto.model:
        return proto
    shape = list(arrays.images.shape[1:])
    return replace(proto, model={**proto.model, "input_shape": shape})


def write_cleaning(
    runs: Sequence[CleaningRun], meta: dict[str, object], out: Path
) -> dict[str, object]:
    noise = {r.seed: r.noise_rate for r in runs}
    doc = {
        "meta": meta,
        "noise_rate": {str(k): v for k, v in noise.items()},
        "budget": {str(r.seed): r.budget for r in runs},
        "auc": summary(runs),
        "auc_minus_random": versus(runs),
        "curves": curves(on_grid(runs)),
        "runs": [r.to_json() for r in runs],
    }
    # compact: per-item traces make the file large with indentation
    (out / "results.json").write_text(json.dumps(doc, separators=(",", ":")))
    return doc


def main_cleaning(args: argparse.Namespace) -> int:
    proto = cleaning_protocol_from(args)
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = load_arrays(proto.data)
    proto = with_input_shape(proto, arrays)
    meta: dict[str, object] = {
        "protocol": proto.name,
        "kind": "label cleaning",
        "temperature": proto.temperature,
        "size": proto.size,
        "ambiguity": proto.ambiguity,
        "subset_seed": proto.subset_seed,
        "budget_factor": proto.budget_factor,
        "fixed_budget": proto.budget,
        "truth": proto.truth,
        "refresh_every": proto.refresh_every,
        "model": proto.model,
        "folds": proto.folds,
        "refit": proto.refit,
        "data": proto.data.path,
    }
    runs: list[CleaningRun] = []
    t0 = time.perf_counter()
    for seed in proto.seeds:
        shared: dict[object, object] = {}
        for selector in proto.selectors:
            run = run_cleaning(proto, selector, seed, arrays, shared)
            runs.append(run)
            acc = run.accuracy()
            print(
                f"{selector} seed {seed}: noise rate {run.noise_rate:.4f}, budget {run.budget}, "
                f"accuracy {acc[0]:.4f} -> {acc[-1]:.4f} after {run.trace.relabels[-1]} "
                f"relabels on {len(run.rows)} items, AUC {run.auc:.4f} "
                f"({run.timings['wall_s']:.0f} s)",
                flush=True,
            )
            meta["wall_s"] = time.perf_counter() - t0
            write_cleaning(runs, meta, args.out)
    meta["wall_s"] = time.perf_counter() - t0
    write_cleaning(runs, meta, args.out)
    areas = {k: v["mean"] for k, v in summary(runs).items()}
    title = f"{proto.name}: N={proto.size}, T={proto.temperature:g}"
    plot(
        on_grid(runs),
        args.out / "cleaning",
        title,
        xlabel="relabels spent",
        ylabel="items whose majority is the true majority",
        areas=areas,
        area_name="AUC",
    )
    for seed, eta in {r.seed: r.noise_rate for r in runs}.items():
        print(f"realised noise rate, seed {seed}: {eta:.4f} (T={proto.temperature:g})")
    for selector, area in summary(runs).items():
        print(f"AUC {selector}: {area['mean']:.4f} ± {area['std']:.4f}")
    for selector, diff in versus(runs).items():
        print(f"AUC {selector} - random, paired by seed: {diff['mean']:+.4f} ± {diff['std']:.4f}")
    print(f"wrote {args.out}/results.json, cleaning.png, cleaning.svg")
    return 0


def main_aggregation(args: argparse.Namespace) -> int:
    """``worker.sim.aggregation.run_aggregation_study`` on the music answers: results.json and
    results.md (``format_markdown``) in ``--out``, the markdown printed."""
    if args.mode != "direct" or args.url or args.cycles is not None or args.resume:
        raise SystemExit(f"{AGGREGATION} runs in direct mode only, without --cycles or --resume")
    try:
        study = importlib.import_module("worker.sim.aggregation")
    except ModuleNotFoundError as exc:
        if exc.name != "worker.sim.aggregation":
            raise
        raise SystemExit(
            f"{AGGREGATION} needs worker/sim/aggregation.py, which is missing"
        ) from exc
    path = data_path(args.data or MUSIC.path)
    seeds = list(args.seeds) if args.seeds is not None else [0, 1, 2]
    t0 = time.perf_counter()
    result = study.run_aggregation_study(path, seeds)
    markdown = str(study.format_markdown(result))
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": {
            "protocol": AGGREGATION,
            "data": str(path),
            "seeds": seeds,
            "wall_s": time.perf_counter() - t0,
        },
        "result": result,
    }
    (args.out / "results.json").write_text(json.dumps(doc, indent=1, default=_jsonable))
    (args.out / "results.md").write_text(markdown + "\n")
    print(markdown)
    print(f"wrote {args.out}/results.json, results.md")
    return 0


def _jsonable(value: object) -> object:
    """numpy scalars and arrays in a study's result, for ``json.dumps``."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
