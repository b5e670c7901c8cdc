"""``annoloop bench --quick --only cycle`` runs a real worker cycle and the bare script end to
end: both train the same model (equal test accuracy, a check that the two do the same work) and
every ratio row is printed (timings are only judged by the full run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_bench_cycle_quick_does_the_same_work_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--quick", "--only", "cycle", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["check"]: r for r in json.loads(out.read_text())["rows"]}
    for size in ("60 labels/2 ep/noise_stability@100", "300 labels/1 ep/entropy@pool"):
        for phase in ("train", "evaluate", "score", "cycle wall", "cycle CPU time"):
            row = rows[f"cycle {size}: {phase}"]
            assert row["value"] > 0
            assert row["reference_value"] > 0
        assert rows[f"cycle {size}: cycle wall"]["status"] == "SMOKE"
        assert rows[f"cycle {size}: test accuracy worker = bare (same work)"]["status"] == "PASS"
