"""A short simulated MNIST run learns: every strategy ends above the model trained on the
20 initial labels. Direct path, demo digits shipped in the package, one seed."""

from __future__ import annotations

import pytest

from worker.sim.direct import run_direct
from worker.sim.protocol import PROTOCOLS, load_arrays

pytestmark = pytest.mark.slow


def test_every_strategy_beats_the_initial_model() -> None:
    proto = PROTOCOLS["tiny"].with_overrides(
        name="sanity",
        pool_size=400,
        test_size=200,
        batch_size=40,
        cycles=2,
        candidates=200,
        model={
            "name": "small_cnn",
            "input_shape": [1, 28, 28],
            "hparams": {"epochs": 10, "batch_size": 16},
        },
    )
    arrays = load_arrays(proto.data)
    for strategy in ("random", "entropy", "margin"):
        run = run_direct(proto, strategy, 0, arrays)
        accuracy = [c.accuracy for c in run.cycles]
        print(strategy, [c.labels for c in run.cycles], accuracy)
        assert [c.labels for c in run.cycles] == [20, 60, 100]
        assert accuracy[-1] > accuracy[0] + 0.05, strategy
