"""The two paths of ``annoloop simulate`` are one loop: for the same protocol and seed, the
engine-only run and the run through ``annoloop up`` (API, embedded broker, worker, leases)
queue the same items in the same rank order and measure the same test accuracies."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.sim.api import local_server, run_api
from worker.sim.direct import run_direct
from worker.sim.protocol import PROTOCOLS, load_arrays

pytestmark = pytest.mark.slow


def test_direct_and_api_select_the_same_items(tmp_path: Path) -> None:
    proto = PROTOCOLS["tiny"]  # 300 pool / 100 test demo digits, 2 cycles of 10, 6 epochs
    arrays = load_arrays(proto.data)
    with local_server(tmp_path / "data") as server:
        for strategy in ("entropy", "random"):
            direct = run_direct(proto, strategy, 0, arrays)
            api = run_api(server, proto, strategy, 0, arrays)
            assert [c.labels for c in api.cycles] == [20, 30, 40]
            assert [c.labels for c in direct.cycles] == [20, 30, 40]
            for d, a in zip(direct.cycles, api.cycles, strict=True):
                assert len(a.selected) == proto.batch_size
                assert a.selected == d.selected, (strategy, d.cycle)
                assert a.accuracy == d.accuracy, (strategy, d.cycle)
