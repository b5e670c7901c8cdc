"""The music label-cleaning protocol (``worker/sim/music.py``) on the real crowd answers, and
the out-of-sample selectors (``worker/sim/heldout.py``): the mechanics, on a small budget and a
small MLP trained a few epochs (seconds on one torch thread).

Needs ``../shared/data/music.npz``; fails, not skips, when it is missing.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from dataclasses import replace
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

import worker.ml.crossfit as crossfit
from tests.shared_data import load_shared
from worker.ml.crossfit import fold_ids, train_fold
from worker.ml.training import TrainConfig
from worker.sim import cli
from worker.sim.cleaning import (
    CLEANING_PROTOCOLS,
    DEFAULT_SELECTORS,
    SELECTORS,
    CleaningProtocol,
    CleaningRun,
    Trace,
    area_over_budget,
    clean_loop,
    cleaning_setup,
    run_cleaning,
    versus,
)
from worker.sim.heldout import HeldOutModel
from worker.sim.music import MUSIC, MUSIC_PROTOCOLS
from worker.sim.oracle import CrowdOracle
from worker.sim.protocol import Arrays, data_path, load_arrays, standardised, tally

FULL = MUSIC_PROTOCOLS["music-clean"]
# The mechanics only: a small MLP, a few epochs, three folds, a budget of 150 relabels.
SMALL = replace(
    FULL,
    budget=150,
    refresh_every=50,
    folds=3,
    model={
        "name": "mlp",
        "input_shape": [124],
        "hparams": {"epochs": 3, "batch_size": 64, "lr": 1e-3, "hidden_sizes": [32]},
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
def arrays(raw: dict[str, np.ndarray]) -> Arrays:
    counts = tally(raw["answers"], 10)
    return Arrays(standardised(raw["X_train"]), raw["y_train"].astype(np.int64), counts)


def test_tally_and_standardised() -> None:
    answers = np.array([[0, -1, 2, 2], [-1, -1, 1, -1]])
    assert tally(answers, 3).tolist() == [[1, 0, 2], [0, 1, 0]]
    with pytest.raises(ValueError, match="answers must lie"):
        tally(answers, 2)
    x = standardised(np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float16))
    assert x.dtype == np.float32
    assert x.tolist() == [[-1.0, 0.0], [1.0, 0.0]]


def test_music_data_as_the_protocol_reads_it(raw: dict[str, np.ndarray], arrays: Arrays) -> None:
    assert arrays.counts is not None
    assert arrays.counts.shape == (700, 10)
    assert int(arrays.counts.sum()) == int((raw["answers"] >= 0).sum()) == 2945
    assert np.allclose(arrays.images.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(arrays.images.std(axis=0), 1.0, atol=1e-4)
    if data_path(MUSIC.path).is_file():  # found beside the checkout as the CLI finds it
        loaded = load_arrays(MUSIC)
        assert loaded.counts is not None
        assert np.array_equal(loaded.counts, arrays.counts)
        assert np.array_equal(loaded.labels, arrays.labels)
        assert np.array_equal(loaded.images, arrays.images)


def test_setup_one_real_answer_per_song_and_truth(
    raw: dict[str, np.ndarray], arrays: Arrays
) -> None:
    s = cleaning_setup(FULL, 0, arrays)
    assert s.rows.tolist() == list(range(700))
    assert s.initial.sum(axis=1).tolist() == [1] * 700
    noisy = s.initial.argmax(axis=1)
    for i, a in enumerate(noisy):
        assert a in raw["answers"][i]
    assert np.array_equal(s.true_major, raw["y_train"])  # the truth, not the crowd majority
    assert s.noise_rate == pytest.approx(float((noisy != raw["y_train"]).mean()))
    assert 0.35 < s.noise_rate < 0.55
    assert s.budget == FULL.budget == 1000
    again = cleaning_setup(FULL, 0, arrays)
    assert np.array_equal(again.initial, s.initial)
    assert not np.array_equal(cleaning_setup(FULL, 1, arrays).initial, s.initial)


def test_every_relabel_is_a_real_answer_until_a_strict_majority(
    raw: dict[str, np.ndarray], arrays: Arrays
) -> None:
    assert arrays.counts is not None
    s = cleaning_setup(SMALL, 3, arrays)
    crowd = CrowdOracle(arrays.labels, arrays.counts, 3)
    asked: list[tuple[int, int]] = []

    def ask(i: int) -> int:
        answer = crowd.answer(i)
        asked.append((i, answer))
        return answer

    rng = np.random.default_rng(0)
    trace, counts = clean_loop(
        s.initial, s.true_major, 400, lambda c: rng.random(len(c)), ask, refresh_every=50
    )
    assert len(asked) == trace.relabels[-1]
    for i, answer in asked:
        assert answer in raw["answers"][i][raw["answers"][i] >= 0]
    assert [i for i, _ in groupby(i for i, _ in asked)] == trace.picked  # one at a time
    assert len(set(trace.picked)) == len(trace.picked)  # never picked again
    for i in trace.picked:
        top = np.sort(counts[i])
        assert top[-1] > top[-2]
    single = [i for i in trace.picked if (raw["answers"][i] >= 0).sum() == 1]
    assert single, "some songs have one answer: it is repeated, one relabel"
    for i in single:
        assert counts[i].sum() == 2


@pytest.mark.parametrize("selector", ["random", "oracle", "ce_minus_entropy_oof"])
def test_run_deterministic_starts_at_noisy_accuracy_within_budget(
    selector: str, raw: dict[str, np.ndarray], arrays: Arrays
) -> None:
    run = run_cleaning(SMALL, selector, 0, arrays)
    again = run_cleaning(SMALL, selector, 0, arrays)
    assert again.trace == run.trace
    assert again.auc == run.auc
    other = run_cleaning(SMALL, selector, 1, arrays)
    assert other.trace != run.trace
    s = cleaning_setup(SMALL, 0, arrays)
    start = float((s.initial.argmax(axis=1) == raw["y_train"]).mean())
    assert run.accuracy()[0] == pytest.approx(start) == pytest.approx(1 - run.noise_rate)
    assert run.trace.relabels[0] == 0
    assert run.trace.relabels[-2] < SMALL.budget <= run.trace.relabels[-1]
    assert run.budget == SMALL.budget
    assert run.auc == pytest.approx(
        area_over_budget(run.trace.relabels, run.accuracy(), SMALL.budget)
    )


def test_train_fold_never_reads_its_own_fold() -> None:
    class Recording(Dataset[Any]):
        def __init__(self, n: int) -> None:
            self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
            self.read: set[int] = set()

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            self.read.add(i)
            return self.x[i], torch.tensor([1.0, 0.0])

    data = Recording(23)
    folds = fold_ids(23, 5, seed=4)
    assert sorted(np.bincount(folds).tolist()) == [4, 4, 5, 5, 5]
    for k in range(5):
        data.read.clear()
        model = torch.nn.Linear(4, 2)
        train_fold(model, data, folds, k, TrainConfig(epochs=2, batch_size=4), seed=0)
        assert data.read == set(np.flatnonzero(folds != k).tolist())


@pytest.mark.parametrize("refit", ["finetune", "retrain"])
def test_heldout_posteriors_come_from_models_that_never_saw_the_item(
    refit: str, arrays: Arrays, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every training call and every held-out prediction is recorded, per model object; a
    fold model's training items, summed over refreshes (fine-tuning continues the same
    object), never include an item it predicts."""
    trained: dict[int, set[int]] = {}
    predicted: list[tuple[int, set[int]]] = []
    alive: list[torch.nn.Module] = []
    real_train, real_heldout = crossfit.train, crossfit.heldout_proba

    def train(model: torch.nn.Module, dataset: Subset[Any], *a: Any, **kw: Any) -> Any:
        alive.append(model)  # no id is reused by another model
        trained.setdefault(id(model), set()).update(int(i) for i in dataset.indices)
        return real_train(model, dataset, *a, **kw)

    def heldout(model: torch.nn.Module, dataset: Any, folds: np.ndarray, fold: int, **kw: Any):  # type: ignore[no-untyped-def]
        predicted.append((id(model), set(np.flatnonzero(folds == fold).tolist())))
        return real_heldout(model, dataset, folds, fold, **kw)

    monkeypatch.setattr(crossfit, "train", train)
    monkeypatch.setattr(crossfit, "heldout_proba", heldout)
    run = run_cleaning(replace(SMALL, refit=refit), "ce_minus_entropy_oof", 0, arrays)
    assert run.timings["model_refreshes"] == 3  # start, after 50 and after 100 relabels
    assert len(predicted) == 3 * SMALL.folds
    assert len({m for m, _ in predicted}) == (1 if refit == "finetune" else 3) * SMALL.folds
    covered: set[int] = set()
    for model, items in predicted:
        assert trained[model], "every held-out prediction comes from a trained model"
        assert not trained[model] & items
        covered |= items
    assert covered == set(range(700))


def test_heldout_selectors_share_the_first_fit(arrays: Arrays) -> None:
    shared: dict[object, object] = {}
    first = run_cleaning(SMALL, "ce_minus_entropy_oof", 0, arrays, shared)
    assert (0, "heldout") in shared
    again = run_cleaning(SMALL, "ce_minus_entropy_oof", 0, arrays, shared)
    assert again.trace == first.trace  # the cached first fit gives the same run
    model = HeldOutModel(SMALL.model, 10, arrays.images, 0, folds=3)
    assert model.first is None
    with pytest.raises(ValueError, match="refit must be"):
        HeldOutModel(SMALL.model, 10, arrays.images, 0, refit="sometimes")


def test_cifar_protocols_keep_their_selectors_and_accept_the_heldout_ones() -> None:
    for proto in CLEANING_PROTOCOLS.values():
        assert set(proto.selectors) <= set(DEFAULT_SELECTORS)
    assert set(SELECTORS) == {*DEFAULT_SELECTORS, "ce_minus_entropy_oof", "joint_oof"}
    args = cli.parse(
        ["--protocol", "cifar10h-clean-fast", "--strategies", "random,ce_minus_entropy_oof"]
    )
    assert cli.cleaning_protocol_from(args).selectors == ("random", "ce_minus_entropy_oof")


def test_heldout_selector_on_images() -> None:
    """The out-of-sample selectors run on an image protocol as on features (CIFAR layout)."""
    rng = np.random.default_rng(0)
    n = 40
    labels = np.arange(n) % 2
    counts = np.zeros((n, 2), dtype=np.int64)
    counts[np.arange(n), labels] = 3
    counts[:, 1] += 1  # class-0 items 3:1, ambiguous
    images = rng.integers(0, 255, size=(n, 8, 8, 3), dtype=np.uint8)
    proto = CleaningProtocol(
        name="toy",
        data=MUSIC,
        temperature=10.0,
        size=n,
        num_classes=2,
        refresh_every=5,
        folds=4,
        model={"name": "mlp", "input_shape": [3, 8, 8], "hparams": {"epochs": 2}},
    )
    run = run_cleaning(proto, "joint_oof", 0, Arrays(images, labels, counts))
    assert run.timings["model_refreshes"] >= 2
    assert run.trace.relabels[-1] >= run.budget


def test_versus_pairs_by_seed() -> None:
    def run(selector: str, seed: int, auc: float) -> CleaningRun:
        return CleaningRun("p", selector, seed, 1, 0.0, 1, auc, Trace([0], [0], []), [])

    runs = [run("random", 0, 0.5), run("random", 1, 0.6), run("x", 0, 0.6), run("x", 1, 0.8)]
    assert versus(runs) == {
        "x": {"mean": pytest.approx(0.15), "std": pytest.approx(0.05), "seeds": 2.0}
    }


def test_cli_music_clean(
    raw: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "music.npz"
    np.savez(data, **raw)
    monkeypatch.setitem(cli.CLEANING, "music-clean", SMALL)
    out = tmp_path / "out"
    argv = ["--protocol", "music-clean", "--data", str(data), "--out", str(out)]
    rc = cli.main([*argv, "--strategies", "random,joint_oof", "--seeds", "0", "--threads", "1"])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["auc"]) == {"random", "joint_oof"}
    assert set(doc["auc_minus_random"]) == {"joint_oof"}
    assert doc["meta"]["truth"] == "labels"
    assert doc["meta"]["folds"] == 3
    assert doc["meta"]["data"] == str(data)
    assert (out / "cleaning.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_music_aggregation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, list[int]]] = []

    def study(path: Path, seeds: list[int]) -> dict[str, Any]:
        calls.append((path, seeds))
        return {"accuracy": np.float64(0.5), "per_seed": np.array([1, 2])}

    fake = types.ModuleType("worker.sim.aggregation")
    fake.run_aggregation_study = study  # type: ignore[attr-defined]
    fake.format_markdown = lambda result: f"| acc | {result['accuracy']} |"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "worker.sim.aggregation", fake)
    data = tmp_path / "m.npz"
    rc = cli.main(
        [
            "--protocol",
            "music-aggregation",
            "--data",
            str(data),
            "--seeds",
            "4,5",
            "--out",
            str(tmp_path / "agg"),
        ]
    )
    assert rc == 0
    assert calls == [(data, [4, 5])]
    doc = json.loads((tmp_path / "agg" / "results.json").read_text())
    assert doc["result"] == {"accuracy": 0.5, "per_seed": [1, 2]}
    assert (tmp_path / "agg" / "results.md").read_text() == "| acc | 0.5 |\n"
