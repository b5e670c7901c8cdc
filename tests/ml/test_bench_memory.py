"""The benchmark's memory probe (``worker.bench_memory``) as a module: it measures a call."""

from __future__ import annotations

from worker.bench_memory import measure


def test_the_probe_measures_one_kernel_call() -> None:
    out = measure(400, 8, 5)
    assert out["picked"] == 5
    assert isinstance(out["delta_kib"], int)
    assert out["delta_kib"] >= 0
    assert out["features_mib"] == 400 * 8 * 4 / 2**20
    assert float(str(out["seconds"])) > 0
