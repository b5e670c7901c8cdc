"""``annoloop simulate``: run a protocol for strategies x seeds, write results.json and plots.

    annoloop simulate --protocol mnist-fast --mode direct --strategies random,entropy \\
        --seeds 0,1 --out sim-out
    annoloop simulate --protocol tiny --mode api                 # starts ``annoloop up`` itself
    annoloop simulate --protocol tiny --mode api --url http://host:8000 --token T
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from worker.sim.api import Server, local_server, run_api
from worker.sim.direct import run_direct
from worker.sim.protocol import PROTOCOLS, DataSource, Protocol, load_arrays
from worker.sim.record import RunRecord
from worker.sim.report import plot, write_json


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="annoloop simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="mnist-fast")
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
    return p.parse_args(list(argv))


def protocol_from(args: argparse.Namespace) -> Protocol:
    proto = PROTOCOLS[args.protocol]
    data = DataSource(args.data, proto.data.images, proto.data.labels, proto.data.counts)
    return proto.with_overrides(
        strategies=args.strategies,
        seeds=args.seeds,
        cycles=args.cycles,
        data=data if args.data else None,
    )


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
    proto = protocol_from(args)
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = load_arrays(proto.data)
    runs: list[RunRecord] = []
    t0 = time.perf_counter()
    meta: dict[str, object] = {"protocol": proto.name, "mode": args.mode, "model": proto.model}
    with ExitStack() as stack:
        if args.mode == "api":
            server = stack.enter_context(_server(args))
        # Seed-major, and the JSON rewritten after every run: a run cut short still leaves
        # every strategy's results for the seeds it completed.
        for seed in proto.seeds:
            for strategy in proto.strategies:
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
    for strategy, area in doc["aubc"].items():
        print(f"AUBC {strategy}: {area['mean']:.4f} ± {area['std']:.4f}")
    print(f"wrote {args.out}/results.json, accuracy.png, accuracy.svg")
    return 0
