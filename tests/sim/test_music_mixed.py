"""The mixed-queue protocol (``worker/sim/mixed.py``) on the real music answers: its
invariants on a small configuration (40 songs to start, 3 rounds of 10, a small MLP trained a
few epochs, 3 folds: seconds on one torch thread).

Needs ``../shared/data/music.npz``; fails, not skips, when it is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.shared_data import load_shared
from worker.sim import cli, mixed
from worker.sim.adaptive import MusicAnswers
from worker.sim.mixed import (
    SELECTORS,
    MixedRun,
    Votes,
    measure,
    run_mixed,
    select,
)
from worker.sim.protocol import standardised

SMALL = replace(
    mixed.MIXED_PROTOCOLS["music-mixed"],
    initial=40,
    batch=10,
    rounds=3,
    folds=3,
    model={
        "name": "mlp",
        "input_shape": [124],
        "hparams": {"epochs": 4, "batch_size": 64, "lr": 1e-3, "hidden_sizes": [32]},
    },
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def raw() -> dict[str, np.ndarray]:
    return load_shared("music.npz")


@pytest.fixture(scope="module")
def data(raw: dict[str, np.ndarray]) -> MusicAnswers:
    return MusicAnswers(
        standardised(raw["X_train"]),
        raw["y_train"].astype(np.int64),
        raw["answers"].astype(np.int64),
        len(raw["classes"]),
    )


@pytest.fixture(scope="module")
def runs(data: MusicAnswers) -> dict[str, MixedRun]:
    return {s: run_mixed(SMALL, s, 0, data) for s in SELECTORS}


@pytest.mark.slow  # the runs fixture: about 45 s on 2 loaded cores
def test_labels_spent_equal_the_budget_in_distinct_songs_per_round(
    runs: dict[str, MixedRun],
) -> None:
    for run in runs.values():
        assert len(run.votes) == SMALL.initial + SMALL.rounds * SMALL.batch
        assert [r["labels"] for r in run.rounds] == [0.0, 10.0, 20.0, 30.0]
        assert [len(set(p)) for p in run.picks] == [SMALL.batch] * SMALL.rounds
        assert [r["picked_new"] + r["picked_relabel"] for r in run.rounds[:-1]] == [10.0] * 3


@pytest.mark.slow  # the runs fixture: about 45 s on 2 loaded cores
def test_every_label_is_an_unused_real_answer(
    runs: dict[str, MixedRun], data: MusicAnswers
) -> None:
    for run in runs.values():
        votes = np.asarray(run.votes)
        pairs = {(int(s), int(a)) for s, a, _ in votes}
        assert len(pairs) == len(votes)  # no (song, annotator) pair twice
        assert (data.answers[votes[:, 0], votes[:, 1]] == votes[:, 2]).all()
        start = votes[: SMALL.initial, 0]
        assert len(set(start.tolist())) == SMALL.initial  # one answer each to start


@pytest.mark.slow  # the runs fixture: about 45 s on 2 loaded cores
def test_selectors_pick_pickable_songs_of_their_kind(
    runs: dict[str, MixedRun], data: MusicAnswers
) -> None:
    answers_per_song = (data.answers >= 0).sum(axis=1)
    for name, run in runs.items():
        used = np.bincount(np.asarray(run.votes)[: SMALL.initial, 0], minlength=700)
        for picked in run.picks:
            picked_arr = np.asarray(picked)
            assert (used[picked_arr] < answers_per_song[picked_arr]).all(), name
            new = int((used[picked_arr] == 0).sum())
            if name.startswith("new_"):
                assert new == SMALL.batch
            if name == "separate":
                assert new == 5
            if name == "separate_40_10":
                assert new == 8
            used[picked_arr] += 1


def test_a_round_never_picks_exhausted_songs_and_fills_from_the_other_side(
    data: MusicAnswers,
) -> None:
    votes = Votes(data, 1)
    for song in range(700):
        votes.add(song)  # every song labelled once: nothing new is left
    one_answer = np.flatnonzero((data.answers >= 0).sum(axis=1) == 1)
    assert len(one_answer) > 0
    rng = np.random.default_rng(0)
    heldout = rng.dirichlet(np.ones(10), 700)
    full = rng.dirichlet(np.ones(10), 700)
    for selector in SELECTORS:
        chosen = select(selector, votes, heldout, full, 50, 1)
        assert len(set(chosen.tolist())) == 50, selector
        assert not np.isin(chosen, one_answer).any(), selector
    with pytest.raises(ValueError, match="no unused answer"):
        votes.add(int(one_answer[0]))


def test_exported_labels_are_votes_where_there_are_some_else_the_model(
    data: MusicAnswers,
) -> None:
    votes = Votes(data, 2)
    for song in range(100):
        votes.add(song)
    truth = data.truth
    full = np.eye(10)[truth]  # a model right everywhere
    heldout = np.full((700, 10), 0.1)
    got = measure(votes, heldout, full, 2)
    voted_right = np.mean([c == truth[s] for s, _, c in votes.triples])
    assert got["voted"] == 100
    assert got["voted_majority_tiebreak"] == pytest.approx(voted_right)  # one vote each
    assert got["all_majority_tiebreak"] == pytest.approx((100 * voted_right + 600) / 700)
    assert got["model_unlabelled"] == 1.0


@pytest.mark.slow  # the runs fixture: about 45 s on 2 loaded cores
def test_deterministic_per_seed(data: MusicAnswers, runs: dict[str, MixedRun]) -> None:
    for name in ("activelab", "separate"):
        again = run_mixed(SMALL, name, 0, data)
        assert again.votes == runs[name].votes
        assert again.rounds == runs[name].rounds
    other = run_mixed(SMALL, "activelab", 1, data)
    assert other.votes != runs["activelab"].votes


def test_unknown_selector_is_refused(data: MusicAnswers) -> None:
    with pytest.raises(ValueError, match="unknown selector"):
        run_mixed(SMALL, "oracle", 0, data)


def test_cli_music_mixed(
    raw: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "music.npz"
    np.savez(path, **raw)
    monkeypatch.setitem(mixed.MIXED_PROTOCOLS, "music-mixed", SMALL)
    out = tmp_path / "out"
    argv = ["--protocol", "music-mixed", "--data", str(path), "--out", str(out), "--cycles", "2"]
    assert cli.main([*argv, "--strategies", "separate,activelab", "--seeds", "0,1"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["summary"]) == {"separate", "activelab"}
    assert set(doc["versus"]["separate"]) == {"activelab"}
    assert doc["meta"]["rounds"] == 2
    assert [len(r["rounds"]) for r in doc["runs"]] == [3] * 4
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "| activelab |" in (out / "results.md").read_text()
