"""Adaptive labels per item (``worker/sim/adaptive.py``) on the real music answers: the stop
rules and the run's invariants (pure crowd simulation, well under a second per run).

Needs ``../shared/data/music.npz``; fails, not skips, when it is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.annotations.aggregation import aggregate
from tests.shared_data import load_shared
from worker.sim import adaptive, cli
from worker.sim.adaptive import (
    AdaptiveProtocol,
    MusicAnswers,
    rule,
    run_adaptive,
    stop_after,
)
from worker.sim.protocol import standardised

PROTO = AdaptiveProtocol()


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


def test_rules_parse_and_refuse_nonsense() -> None:
    assert rule("fixed_3") == adaptive.Rule("fixed_3", "fixed", 3)
    assert rule("confident_0.95_k7") == adaptive.Rule("confident_0.95_k7", "confident", 7, 0.95)
    for bad in ("fixed_0", "confident_0.4_k5", "majority_3", "confident_1.5_k5"):
        with pytest.raises(ValueError, match=bad):
            rule(bad)


def test_stop_rules_on_answer_sequences() -> None:
    decided = rule("decided_5")
    assert stop_after([2, 2, 2, 0, 0], decided, None, 10) == 3  # lead 3 > 2 still wanted
    assert stop_after([2, 2, 0, 0, 1], decided, None, 10) == 5
    confident = rule("confident_0.9_k5")
    assert stop_after([2, 2, 2, 0, 0], confident, 2, 10) == 2
    assert stop_after([4, 2, 2, 0, 0], confident, 1, 10) == 1
    assert stop_after([4, 2, 3, 1, 0], confident, 2, 10) == 5  # never leads by 2: k_max
    assert stop_after([2, 2, 2, 0, 0], confident, None, 10) == 3  # no estimate: decided_5
    assert stop_after([1, 2, 3], rule("fixed_3"), None, 10) == 3


def test_labels_never_exceed_k_max_and_fixed_spend_exactly_k(data: MusicAnswers) -> None:
    for name in ("fixed_1", "fixed_3", "decided_5", "confident_0.9_k5", "confident_0.99_k7"):
        run = run_adaptive(PROTO, name, 0, data)
        k = rule(name).k
        per_song = np.asarray(run.per_song)
        assert per_song.min() >= 1, name
        assert per_song.max() <= k, name
        assert run.labels == per_song.sum() == len(run.votes)
        assert np.array_equal(np.bincount([v[0] for v in run.votes], minlength=700), per_song)
        if name.startswith("fixed"):
            assert run.labels == 700 * k
        votes = np.asarray(run.votes)
        assert (data.answers[votes[:, 0], votes[:, 1]] == votes[:, 2]).all()  # real answers


def test_fixed_one_is_the_one_answer_accuracy(data: MusicAnswers) -> None:
    run = run_adaptive(PROTO, "fixed_1", 3, data)
    votes = np.asarray(run.votes)
    one_answer = float(np.mean(votes[:, 2] == data.truth[votes[:, 0]]))
    assert run.accuracy["majority"] == pytest.approx(one_answer)
    assert run.accuracy["majority_tiebreak"] == pytest.approx(one_answer)
    assert run.tied == 0
    # a draw per song weighs every song alike; the pooled answers weigh busy songs more
    per_song = (data.answers == data.truth[:, None]).sum(1) / (data.answers >= 0).sum(1)
    assert abs(one_answer - per_song.mean()) < 0.06


def test_decided_never_changes_the_majority_of_fixed_k(data: MusicAnswers) -> None:
    fixed = run_adaptive(PROTO, "fixed_5", 1, data)
    decided = run_adaptive(PROTO, "decided_5", 1, data)
    assert decided.labels < fixed.labels
    assert decided.accuracy["majority"] == fixed.accuracy["majority"]
    # a rule that asks less sees a prefix of the same answers
    by_song = {}
    for song, annotator, _ in fixed.votes:
        by_song.setdefault(song, []).append(annotator)
    for song, n in enumerate(decided.per_song):
        asked = [a for s, a, _ in decided.votes if s == song]
        assert asked == by_song[song][:n]


def test_confidence_uses_the_ds_estimate_from_earlier_batches(data: MusicAnswers) -> None:
    run = run_adaptive(PROTO, "confident_0.95_k5", 0, data)
    assert 0 < run.confident["right"] <= run.confident["songs"] <= 600  # never in batch 1
    assert len(run.batches) == 7
    assert run.batches[0]["p"] is None
    assert run.batches[0]["needed_lead"] is None
    seen = 0
    for batch, before in zip(
        run.batches[1:], np.cumsum([b["labels"] for b in run.batches]), strict=False
    ):
        votes = np.asarray(run.votes[:before])
        ds = aggregate("dawid_skene", *votes.T, num_items=700, num_annotators=44, num_classes=10)
        assert ds.annotator_accuracy is not None
        weights = np.bincount(votes[:, 1], minlength=44)
        known = np.isfinite(ds.annotator_accuracy) & (weights > 0)
        p = np.average(ds.annotator_accuracy[known], weights=weights[known])
        assert batch["p"] == pytest.approx(p)
        assert 0.1 < p < 1
        assert batch["needed_lead"] >= 1
        seen += 1
    assert seen == 6


def test_deterministic_per_seed(data: MusicAnswers) -> None:
    a = run_adaptive(PROTO, "confident_0.9_k7", 4, data)
    b = run_adaptive(PROTO, "confident_0.9_k7", 4, data)
    assert a.votes == b.votes
    assert a.accuracy == b.accuracy
    assert a.batches == b.batches
    assert run_adaptive(PROTO, "confident_0.9_k7", 5, data).votes != a.votes


def test_cli_music_adaptive(raw: dict[str, np.ndarray], tmp_path: Path) -> None:
    path = tmp_path / "music.npz"
    np.savez(path, **raw)
    out = tmp_path / "out"
    argv = ["--protocol", "music-adaptive", "--data", str(path), "--out", str(out)]
    assert cli.main([*argv, "--strategies", "fixed_1,decided_5", "--seeds", "0,1"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert list(doc["summary"]) == ["fixed_1", "decided_5"]
    assert doc["summary"]["fixed_1"]["labels"] == {"mean": 700.0, "std": 0.0}
    assert len(doc["runs"]) == 4
    assert "| decided_5 |" in (out / "results.md").read_text()
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="unknown rule"):
        cli.main([*argv, "--strategies", "fixed_x"])


def test_versus_fixed_interpolates_the_fixed_curve_of_the_same_seed() -> None:
    def run(name: str, seed: int, labels: int, acc: float) -> adaptive.AdaptiveRun:
        accuracy = dict.fromkeys(adaptive.METHODS, acc)
        return adaptive.AdaptiveRun(name, seed, labels, [], accuracy, 0, [], {}, [])

    runs = [
        run("fixed_1", 0, 700, 0.5),
        run("fixed_3", 0, 2100, 0.6),
        run("decided_3", 0, 1400, 0.6),
        run("fixed_1", 1, 700, 0.4),
        run("fixed_3", 1, 2100, 0.6),
        run("decided_3", 1, 1050, 0.45),
    ]
    gains = adaptive.versus_fixed(runs)
    assert set(gains) == {"decided_3"}
    assert gains["decided_3"]["majority"]["mean"] == pytest.approx((0.05 + 0.0) / 2)
    assert gains["decided_3"]["majority"]["std"] == pytest.approx(0.025)
