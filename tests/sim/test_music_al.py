"""``music-al``: active learning on music.npz with real crowd answers as the oracle.

Checks what would make the protocol's numbers wrong without failing anything else: a label
that is not one of the song's real answers, answers that change with the order of questions,
accuracy scored against anything but the 300 test songs' truth, test songs leaking into the pool
or their features standardised with their own statistics; and that the CLI skips a strategy
the mlp cannot serve with the API's reason. One seed, two short cycles: a few seconds on one
thread. Needs ``../shared/data/music.npz``; fails, not skips, when it is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import worker.sim.direct as direct
from worker.sim.cli import main
from worker.sim.music_al import MUSIC_AL_PROTOCOLS
from worker.sim.oracle import Oracle, make_oracle
from worker.sim.protocol import data_path, load_arrays, setup

pytestmark = pytest.mark.slow

PROTO = MUSIC_AL_PROTOCOLS["music-al"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def raw() -> dict[str, np.ndarray]:
    path = data_path(PROTO.data.path)
    if not path.is_file():
        pytest.fail(f"music-al needs {PROTO.data.path} (set ANNOLOOP_SHARED_DATA)")
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _real(raw: dict[str, np.ndarray], song: int) -> set[int]:
    answers = raw["answers"][song]
    return {int(a) for a in answers[answers >= 0]}


def test_oracle_gives_real_answers_keyed_by_seed_song_and_draw(raw: dict[str, Any]) -> None:
    arrays = load_arrays(PROTO.data)
    forward = make_oracle(PROTO.oracle, arrays.labels, arrays.counts, seed=3)
    backward = make_oracle(PROTO.oracle, arrays.labels, arrays.counts, seed=3)
    songs = range(700)
    a = {s: [forward.answer(s) for _ in range(3)] for s in songs}
    b = {s: [backward.answer(s) for _ in range(3)] for s in reversed(songs)}
    assert a == b  # the same (seed, song, draw) gives the same answer, whatever the order
    assert all(set(a[s]) <= _real(raw, s) for s in songs)
    # uniform over the song's answers: song 0's answers, counted with their multiplicity
    counts = np.bincount(raw["answers"][0][raw["answers"][0] >= 0], minlength=10)
    draws = [make_oracle("crowd", arrays.labels, arrays.counts, s).answer(0) for s in range(600)]
    expected = counts / counts.sum()
    assert np.abs(np.bincount(draws, minlength=10) / 600 - expected).max() < 0.08
    with pytest.raises(ValueError, match="no crowd answers"):
        forward.answer(700)  # the first test song: it has no answers, and is never asked


def test_pool_is_the_700_songs_and_test_the_300_with_train_statistics(raw: dict[str, Any]) -> None:
    s = setup(PROTO, 0)
    assert s.pool.tolist() == list(range(700))
    assert s.test.tolist() == list(range(700, 1000))
    assert np.array_equal(s.arrays.labels[s.test], raw["y_test"])
    x_train = raw["X_train"].astype(np.float64)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    want = (raw["X_test"].astype(np.float64) - mean) / np.where(std > 0, std, 1)
    np.testing.assert_allclose(s.arrays.images[s.test], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.arrays.images[s.pool].mean(axis=0), 0, atol=1e-5)
    # 20 initial songs drawn uniformly with the seed, not stratified by the truth
    assert len(s.initial) == 20
    assert set(s.initial) <= set(s.pool)
    assert s.initial.tolist() != setup(PROTO, 1).initial.tolist()
    assert s.initial.tolist() == setup(PROTO, 0).initial.tolist()


def test_short_run_labels_with_real_answers_and_scores_on_test_truth(
    raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[tuple[int, int]] = []
    scored: list[np.ndarray] = []

    class Recording(Oracle):
        def __init__(self, inner: Oracle) -> None:
            self.inner = inner

        def answer(self, row: int) -> int:
            label = self.inner.answer(row)
            given.append((row, label))
            return label

    real_make, real_evaluate = direct.make_oracle, direct.evaluate
    monkeypatch.setattr(direct, "make_oracle", lambda *a: Recording(real_make(*a)))

    def evaluate(model: Any, pool: Any, labels: np.ndarray, device: Any) -> dict[str, float]:
        scored.append(np.asarray(labels))
        return real_evaluate(model, pool, labels, device)

    monkeypatch.setattr(direct, "evaluate", evaluate)
    model = {**PROTO.model, "hparams": {**PROTO.model["hparams"], "epochs": 5}}
    proto = PROTO.with_overrides(cycles=2, model=model)
    for strategy in ("random", "margin"):
        given.clear()
        run = direct.run_direct(proto, strategy, 0)
        assert [c.labels for c in run.cycles] == [20, 40, 60]
        rows = [row for row, _ in given]
        assert len(rows) == len(set(rows)) == 60
        assert max(rows) < 700
        assert all(label in _real(raw, row) for row, label in given), strategy
        for c in run.cycles:
            assert abs(c.accuracy * 300 - round(c.accuracy * 300)) < 1e-6
    assert len(scored) == 6
    assert all(np.array_equal(s, raw["y_test"]) for s in scored)


def test_cli_skips_what_the_mlp_cannot_serve(tmp_path: Path) -> None:
    out = tmp_path / "music-al"
    argv = ["--protocol", "music-al", "--seeds", "0", "--cycles", "1"]
    assert main([*argv, "--strategies", "random,learning_loss", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert "loss-prediction module" in doc["meta"]["not_applicable"]["learning_loss"]
    assert [r["strategy"] for r in doc["runs"]] == ["random"]
    assert (out / "results.md").read_text().count("| random | 1 |") == 1
