"""Merge several ``annoloop simulate`` results of one protocol into one table and plot.

    python scripts/merge_results.py docs/results/mnist docs/results/mnist-more ... \
        --out docs/results/mnist-all

Each input folder holds a ``results.json``; they must share the protocol and the model (so the
runs are comparable seed by seed). A (strategy, seed) run found in two folders is an error:
the table must not silently pick one. Writes ``results.json``, ``results.md`` (the table of
``worker.sim.report.markdown_table``: AUBC mean ± std, paired against random, seconds per
cycle) and ``accuracy.png``/``.svg`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from worker.sim.record import RunRecord
from worker.sim.report import markdown_table, plot, write_json


def merge(folders: list[Path]) -> tuple[list[RunRecord], dict[str, Any]]:
    runs: dict[tuple[str, int], RunRecord] = {}
    meta: dict[str, Any] | None = None
    sources: dict[str, list[str]] = {}
    for folder in folders:
        doc = json.loads((folder / "results.json").read_text())
        key = {k: doc["meta"].get(k) for k in ("protocol", "model")}
        if meta is None:
            meta = {**key, "mode": doc["meta"].get("mode")}
        elif key != {k: meta[k] for k in ("protocol", "model")}:
            raise SystemExit(f"{folder}: another protocol or model than {folders[0]}")
        for raw in doc["runs"]:
            run = RunRecord.from_json(raw)
            if (run.strategy, run.seed) in runs:
                raise SystemExit(f"{folder}: {run.strategy} seed {run.seed} is in two folders")
            runs[(run.strategy, run.seed)] = run
            sources.setdefault(folder.name, [])
            if run.strategy not in sources[folder.name]:
                sources[folder.name].append(run.strategy)
    if meta is None:
        raise SystemExit("no folders given")
    return list(runs.values()), {**meta, "merged_from": sources}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    runs, meta = merge(args.folders)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = write_json(runs, args.out / "results.json", meta)
    plot(runs, args.out / "accuracy", f"{meta['protocol']} (merged)")
    table = markdown_table(doc)
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
