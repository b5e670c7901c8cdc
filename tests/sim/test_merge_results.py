"""``scripts/merge_results.py``: several results folders of one protocol become one table; a
run found twice, or another protocol, is refused rather than silently picked."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from worker.sim.record import CycleRecord, RunRecord
from worker.sim.report import aubc, write_json

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "merge_results", ROOT / "scripts/merge_results.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(strategy: str, seed: int, accs: list[float], protocol: str = "mnist") -> RunRecord:
    cycles = [CycleRecord(i, 20 * (i + 1), a, [], {"train_s": 1.0}) for i, a in enumerate(accs)]
    return RunRecord(protocol, "direct", strategy, seed, cycles)


def _folder(tmp: Path, name: str, runs: list[RunRecord], protocol: str = "mnist") -> Path:
    folder = tmp / name
    folder.mkdir()
    write_json(runs, folder / "results.json", {"protocol": protocol, "model": {"name": "m"}})
    return folder


def test_runs_of_two_folders_are_summarised_together(tmp_path: Path) -> None:
    a = _folder(tmp_path, "a", [_run("random", 0, [0.5, 0.6]), _run("random", 1, [0.5, 0.7])])
    b = _folder(tmp_path, "b", [_run("margin", 0, [0.5, 0.8]), _run("margin", 1, [0.5, 0.9])])
    runs, meta = _script().merge([a, b])
    assert sorted((r.strategy, r.seed) for r in runs) == [
        ("margin", 0),
        ("margin", 1),
        ("random", 0),
        ("random", 1),
    ]
    assert meta["merged_from"] == {"a": ["random"], "b": ["margin"]}
    doc = write_json(runs, tmp_path / "out.json", meta)
    expected = (aubc([20, 40], [0.5, 0.8]) + aubc([20, 40], [0.5, 0.9])) / 2
    assert doc["aubc"]["margin"]["mean"] == pytest.approx(expected)


def test_a_run_in_two_folders_or_another_protocol_is_refused(tmp_path: Path) -> None:
    a = _folder(tmp_path, "a", [_run("random", 0, [0.5, 0.6])])
    b = _folder(tmp_path, "b", [_run("random", 0, [0.5, 0.7])])
    c = _folder(tmp_path, "c", [_run("random", 1, [0.5, 0.7], "music-al")], "music-al")
    merge = _script().merge
    with pytest.raises(SystemExit, match="random seed 0 is in two folders"):
        merge([a, b])
    with pytest.raises(SystemExit, match="another protocol or model"):
        merge([a, c])
    assert json.loads((a / "results.json").read_text())["runs"][0]["seed"] == 0
