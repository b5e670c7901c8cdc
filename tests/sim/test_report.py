"""AUBC on curves worked by hand, the summary over seeds, and the plot files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.sim.record import CycleRecord, RunRecord
from worker.sim.report import aubc, curves, plot, write_json


def test_constant_accuracy_gives_that_accuracy() -> None:
    assert aubc([20, 40, 60, 80], [0.7] * 4) == pytest.approx(0.7)


def test_hand_worked_curves() -> None:
    # straight line 0 -> 1 over [0, 10]: half the box
    assert aubc([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    # trapezoids: (10 * (0.2 + 0.6) / 2 + 30 * (0.6 + 1.0) / 2) / 40 = (4 + 24) / 40
    assert aubc([20, 30, 60], [0.2, 0.6, 1.0]) == pytest.approx(0.7)
    # unequal steps, points given out of order
    assert aubc([60, 20, 30], [1.0, 0.2, 0.6]) == pytest.approx(0.7)
    # a single point has no range: its accuracy
    assert aubc([20], [0.4]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="equally long"):
        aubc([1, 2], [0.5])


def _run(strategy: str, seed: int, accs: list[float]) -> RunRecord:
    cycles = [CycleRecord(k, 20 + 10 * k, a, [k]) for k, a in enumerate(accs)]
    return RunRecord("hand", "direct", strategy, seed, cycles)


def test_mean_std_and_aubc_over_seeds(tmp_path: Path) -> None:
    runs = [_run("a", 0, [0.2, 0.4, 0.6]), _run("a", 1, [0.4, 0.6, 0.8]), _run("b", 0, [0.5] * 3)]
    c = curves(runs)
    assert c["a"]["labels"] == [20, 30, 40]
    assert c["a"]["mean"] == pytest.approx([0.3, 0.5, 0.7])
    assert c["a"]["std"] == pytest.approx([0.1, 0.1, 0.1])
    assert c["a"]["aubc"] == pytest.approx([0.5, 0.1])  # seeds: 0.4 and 0.6
    assert c["b"]["aubc"] == pytest.approx([0.5, 0.0])

    doc = write_json(runs, tmp_path / "results.json", {"protocol": "hand"})
    back = json.loads((tmp_path / "results.json").read_text())
    assert back == json.loads(json.dumps(doc))
    assert back["aubc"]["a"]["mean"] == pytest.approx(0.5)
    assert RunRecord.from_json(back["runs"][0]) == runs[0]

    paths = plot(runs, tmp_path / "accuracy", "hand")
    assert [p.name for p in paths] == ["accuracy.png", "accuracy.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text()
