"""What a simulated active-learning run does: data, split, initial labels, loop and model.

Everything random here is keyed by a seed, so the direct and the API path build the same pool,
test split and initial labels for the same (protocol, seed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

DEMO = "demo"  # the MNIST digits shipped in the package (app/demo/mnist_demo.npz)


@dataclass(frozen=True)
class DataSource:
    """An ``.npz`` and which arrays to read; ``path == "demo"`` = the package's demo digits."""

    path: str = DEMO
    images: str = "images"  # uint8, (N, H, W) or (N, H, W, 3)
    labels: str = "labels"  # (N,) true class
    counts: str | None = None  # (N, C) crowd votes, for the crowd oracle (e.g. CIFAR-10H)
    # ``counts`` names (N, W) answers instead: the class annotator w gave item i, -1 for none;
    # they are tallied into (N, C) votes, C = the highest class in answers or labels + 1
    answers: bool = False
    standardise: bool = False  # float features: subtract each column's mean, divide by its std
    # The file's own test set, in arrays of its own (music.npz's X_test / y_test): appended
    # after the train rows, which are then the whole pool; standardised with the train rows'
    # mean and std (what a user knows when the model is fitted); never asked for votes.
    test_images: str | None = None
    test_labels: str | None = None


@dataclass(frozen=True)
class Arrays:
    images: np.ndarray
    labels: np.ndarray  # (N,) int64
    counts: np.ndarray | None  # (N, C) int64 or None
    fixed_test: int = 0  # the last rows are the file's own test set (DataSource.test_images)


def data_path(path: str) -> Path:
    """Where a dataset path points: as given (relative to the working directory), else the
    same relative path from the repository root, else the file's name under
    ``$ANNOLOOP_SHARED_DATA``; the protocols name ``../shared/data/...`` (beside the checkout)."""
    given = Path(path)
    candidates = [given]
    if not given.is_absolute():
        candidates.append(Path(__file__).resolve().parents[2] / given)
    if os.environ.get("ANNOLOOP_SHARED_DATA"):
        candidates.append(Path(os.environ["ANNOLOOP_SHARED_DATA"]) / given.name)
    return next((c for c in candidates if c.is_file()), given)


def load_arrays(source: DataSource) -> Arrays:
    # The demo file is read without importing app.demo.seed, which pulls in the web app.
    if source.path == DEMO:
        with resources.files("app.demo").joinpath("mnist_demo.npz").open("rb") as fh:
            data = dict(np.load(fh))
    else:
        with np.load(data_path(source.path)) as npz:
            data = {k: npz[k] for k in npz.files}
    labels = data[source.labels].astype(np.int64)
    counts = data[source.counts].astype(np.int64) if source.counts else None
    if counts is not None and source.answers:
        counts = tally(counts, int(max(counts.max(), labels.max())) + 1)
    images = data[source.images]
    if source.test_images is None:
        return Arrays(standardised(images) if source.standardise else images, labels, counts)
    if source.test_labels is None:
        raise ValueError("DataSource.test_images needs test_labels")
    test = data[source.test_images]
    test_labels = data[source.test_labels].astype(np.int64)
    if source.standardise:
        images, test = standardised(images), standardised(test, reference=images)
    if counts is not None:  # the test rows have no votes: the oracle refuses to answer them
        counts = np.concatenate([counts, np.zeros((len(test), counts.shape[1]), np.int64)])
    return Arrays(
        np.concatenate([images, test]),
        np.concatenate([labels, test_labels]),
        counts,
        fixed_test=len(test),
    )


def tally(answers: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, W) per-annotator classes, -1 = no answer -> (N, C) int64 vote counts."""
    answers = np.asarray(answers, dtype=np.int64)
    if answers.min() < -1 or answers.max() >= num_classes:
        raise ValueError(f"answers must lie in [-1, {num_classes})")
    counts = np.zeros((len(answers), num_classes), dtype=np.int64)
    rows, workers = np.nonzero(answers >= 0)
    np.add.at(counts, (rows, answers[rows, workers]), 1)
    return counts


def standardised(features: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """(N, D) -> (N, D) float32, each column shifted by the mean and divided by the std of
    ``reference`` (default: ``features`` itself, which then lands at mean 0, std 1); constant
    columns divide by 1."""
    x = np.asarray(features, dtype=np.float64)
    ref = x if reference is None else np.asarray(reference, dtype=np.float64)
    std = ref.std(axis=0)
    return ((x - ref.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


@dataclass(frozen=True)
class Protocol:
    """One experiment: every strategy x seed runs ``cycles`` acquisition rounds.

    A run trains ``cycles + 1`` models: on the initial labels, then after each round of
    ``batch_size`` new labels, so accuracy is reported at ``initial + k * batch_size`` labels.
    """

    name: str
    data: DataSource
    pool_size: int
    test_size: int
    split_seed: int  # pool / test split, the same for every run seed
    initial_per_class: int  # stratified initial labels, drawn with the run seed
    batch_size: int
    cycles: int
    model: dict[str, Any]  # ModelSpecIn: {"name", "input_shape", "hparams"}
    num_classes: int = 10
    candidates: int | None = None  # score a seeded random subset of the unlabelled pool
    oracle: str = "exact"  # "exact" (true label) or "crowd" (a draw from data.counts)
    strategies: tuple[str, ...] = ("random", "entropy")
    seeds: tuple[int, ...] = (0,)
    # Draw this many initial pool rows uniformly with the run seed instead of
    # ``initial_per_class`` per TRUE class: a user with crowd labels has no truth to stratify by.
    initial_size: int | None = None

    def with_overrides(self, **changes: Any) -> Protocol:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    # "NAME+ceal" runs strategy NAME with CEAL's pseudo-labels (worker/ml/ceal.py) and these
    # options; the cap keeps the fine-tuning stage near the labelled set's size on MNIST.
    ceal: tuple[tuple[str, Any], ...] = (("max_items", 1000),)

    def strategy_params(self, strategy: str = "") -> dict[str, Any]:
        """The cycle params for ``strategy`` (a name, or ``NAME+ceal``)."""
        params: dict[str, Any] = {} if self.candidates is None else {"candidates": self.candidates}
        if strategy.partition("+")[2] == "ceal":
            params["ceal"] = dict(self.ceal)
        return params


def base_strategy(name: str) -> str:
    """The registered strategy of a run name: ``margin+ceal`` -> ``margin``."""
    return name.partition("+")[0]


@dataclass(frozen=True)
class Setup:
    """The concrete run inputs; indices are rows of the data file."""

    pool: np.ndarray  # (P,) sorted data rows: upload order, hence item-id order, in the API
    test: np.ndarray  # (T,) sorted data rows
    initial: np.ndarray  # (I,) sorted data rows, a subset of ``pool``
    arrays: Arrays = field(repr=False)


def setup(protocol: Protocol, seed: int, arrays: Arrays | None = None) -> Setup:
    arrays = arrays if arrays is not None else load_arrays(protocol.data)
    n = len(arrays.labels)
    pool, test = split(protocol, n, arrays.fixed_test)
    rng = np.random.default_rng([seed, 1])  # keyed by the run seed, apart from cycle seeds
    if protocol.initial_size is not None:
        drawn = rng.choice(pool, size=min(protocol.initial_size, len(pool)), replace=False)
        return Setup(pool, test, np.sort(drawn.astype(np.int64)), arrays)
    initial = []
    for c in range(protocol.num_classes):
        members = pool[arrays.labels[pool] == c]
        take = min(protocol.initial_per_class, len(members))
        initial.extend(rng.choice(members, size=take, replace=False).tolist())
    return Setup(pool, test, np.sort(np.asarray(initial, dtype=np.int64)), arrays)


def split(protocol: Protocol, n: int, fixed_test: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) rows: the file's own split when it has one, else a seeded random split."""
    if fixed_test:
        if (protocol.pool_size, protocol.test_size) != (n - fixed_test, fixed_test):
            raise ValueError(
                f"{protocol.name}: the data file's split is {n - fixed_test} / {fixed_test}, "
                f"the protocol says {protocol.pool_size} / {protocol.test_size}"
            )
        return np.arange(n - fixed_test), np.arange(n - fixed_test, n)
    if protocol.pool_size + protocol.test_size > n:
        raise ValueError(f"{protocol.name}: pool + test exceed the {n} items of the data file")
    perm = np.random.default_rng(protocol.split_seed).permutation(n)
    pool = np.sort(perm[: protocol.pool_size])
    test = np.sort(perm[protocol.pool_size : protocol.pool_size + protocol.test_size])
    return pool, test


def cycle_seed(seed: int, cycle: int) -> int:
    """The seed of cycle ``cycle`` (0-based) of run ``seed``: model init, shuffling, scoring."""
    return seed * 1000 + cycle


_MNIST_CNN = {"name": "small_cnn", "input_shape": [1, 28, 28]}

PROTOCOLS: dict[str, Protocol] = {
    # The noise-stability paper's MNIST protocol (issue 7); results in docs/results.md.
    "mnist": Protocol(
        name="mnist",
        data=DataSource("../shared/data/mnist10k.npz"),
        pool_size=8000,
        test_size=2000,
        split_seed=0,
        initial_per_class=2,
        batch_size=20,
        cycles=10,
        model={**_MNIST_CNN, "hparams": {"epochs": 50, "batch_size": 96, "lr": 1e-3}},
        candidates=1000,
        strategies=(
            "random",
            "entropy",
            "margin",
            "bald",
            "coreset",
            "noise_stability",
            "expected_gradnorm",
            "entropy_gradnorm",
            "dispersion",
        ),
        seeds=(0, 1, 2),
    ),
    # The same on unsupervised features of the digits (``python -m worker.sim.features --pool-of
    # mnist`` fits them on the pool's images only): an MLP head, as on a frozen backbone. The
    # input width comes from the file.
    "mnist-features": Protocol(
        name="mnist-features",
        data=DataSource("mnist10k-features.npz", images="features", standardise=True),
        pool_size=8000,
        test_size=2000,
        split_seed=0,
        initial_per_class=2,
        batch_size=20,
        cycles=10,
        model={"name": "mlp", "hparams": {"epochs": 50, "batch_size": 96, "lr": 1e-3}},
        candidates=1000,
        strategies=("random", "margin", "noise_stability", "dispersion", "typiclust"),
        seeds=(0, 1, 2),
    ),
    # Minutes on a laptop CPU: the package's demo digits, a few short cycles.
    "mnist-fast": Protocol(
        name="mnist-fast",
        data=DataSource(DEMO),
        pool_size=1500,
        test_size=500,
        split_seed=0,
        initial_per_class=2,
        batch_size=20,
        cycles=4,
        model={**_MNIST_CNN, "hparams": {"epochs": 15, "batch_size": 16, "lr": 1e-3}},
        candidates=500,
        strategies=("random", "entropy", "margin"),
        seeds=(0, 1),
    ),
    # Seconds: what the tests drive through both paths.
    "tiny": Protocol(
        name="tiny",
        data=DataSource(DEMO),
        pool_size=300,
        test_size=100,
        split_seed=0,
        initial_per_class=2,
        batch_size=10,
        cycles=2,
        model={**_MNIST_CNN, "hparams": {"epochs": 6, "batch_size": 16}},
        candidates=200,
        strategies=("entropy", "random"),
        seeds=(0,),
    ),
}
