"""Pausing training after an epoch and resuming it later gives the same model as never pausing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.ml.data import ArrayDataset, one_hot
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig, TrainingPaused, TrainState, train


def _data(n: int = 50) -> ArrayDataset:
    rng = np.random.default_rng(3)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 5)).astype(np.float32) + y[:, None]
    return ArrayDataset(x, one_hot(y, 3))


# Dropout draws from the global RNG and the cosine schedule has state: both must be resumed.
SPEC = {"name": "mlp", "input_shape": [5], "num_classes": 3}
HPARAMS = {"hidden_sizes": [12], "dropout": 0.3}


@pytest.mark.parametrize(
    ("optimizer", "schedule"), [("adam", "cosine"), ("sgd", "step"), ("adam", "constant")]
)
@pytest.mark.parametrize("pause_after", [[0], [1, 3], [0, 1, 2, 3, 4]])
def test_resumed_training_equals_uninterrupted(
    optimizer: str, schedule: str, pause_after: list[int]
) -> None:
    spec = ModelSpec.from_dict({**SPEC, "hparams": HPARAMS})
    config = TrainConfig(epochs=6, batch_size=8, optimizer=optimizer, schedule=schedule, lr=0.05)
    data = _data()
    straight = build_model(spec, seed=1)
    expected = train(straight, data, config, seed=11, device="cpu")

    resume: TrainState | None = None
    pauses: list[int] = []
    while True:
        model = build_model(spec, seed=1)  # a fresh process builds the model again
        try:
            result = train(
                model,
                data,
                config,
                seed=11,
                device="cpu",
                pause=lambda epoch: epoch in pause_after and epoch not in pauses,
                resume=resume,
            )
            break
        except TrainingPaused as paused:
            pauses.append(paused.state.epochs_done - 1)
            # Through bytes, as the pipeline stores it in a blob.
            resume = TrainState.from_bytes(paused.state.to_bytes())

    assert pauses == pause_after
    assert result.losses == expected.losses
    for a, b in zip(straight.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_pause_is_not_asked_after_the_last_epoch() -> None:
    asked: list[int] = []
    model = build_model(ModelSpec.from_dict({**SPEC, "hparams": HPARAMS}), seed=0)

    def pause(epoch: int) -> bool:
        asked.append(epoch)
        return False

    train(model, _data(), TrainConfig(epochs=3, batch_size=16), seed=0, pause=pause)
    assert asked == [0, 1]


def test_pause_leaves_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    model = build_model(ModelSpec.from_dict({**SPEC, "hparams": HPARAMS}), seed=0)
    with pytest.raises(TrainingPaused) as paused:
        train(model, _data(), TrainConfig(epochs=3), seed=0, pause=lambda _epoch: True)
    assert paused.value.state.epochs_done == 1
    assert torch.equal(before, torch.random.get_rng_state())
