"""A short simulated MNIST run learns: every strategy of the ``mnist`` protocol ends above the
model trained on the 20 initial labels. Direct path, demo digits shipped in the package (no
shared data needed), one seed, two cycles of 40."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from worker.sim.direct import run_direct
from worker.sim.protocol import PROTOCOLS, load_arrays

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # One torch thread: the fastest for these tiny models, steady when the CPU is shared, and
    # the float summation order (hence the numbers) does not depend on the machine's cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    for strategy in PROTOCOLS["mnist"].strategies:
        run = run_direct(proto, strategy, 0, arrays)
        accuracy = [c.accuracy for c in run.cycles]
        print(strategy, [c.labels for c in run.cycles], accuracy)
        assert [c.labels for c in run.cycles] == [20, 60, 100]
        assert accuracy[-1] > accuracy[0] + 0.05, strategy
