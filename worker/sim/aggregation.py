"""Label aggregation on real crowd labels: every method of ``app.annotations.aggregation``
against the true genres of the music data (Rodrigues et al. 2013: 700 songs, 44 workers,
2,945 answers, 10 genres; ``music.npz`` of the shared data).

Per seed: ``majority``, ``majority_tiebreak`` (ties broken by a seeded draw, and by the model),
``dawid_skene`` and ``crowdlab``. CROWDLAB and the model tie-break take held-out model
probabilities from a softmax regression on the 124 audio features, cross-fitted over K folds:
each fold is predicted by a model trained on the other folds only, against their soft majority
vote (vote counts / total; the truth is never used), with the features standardised by the
training folds' mean and std. The seed sets the folds and the random tie-break.

Accuracy is against the true genre with a label of -1 (an open tie) counted wrong; the tied
items (top vote count shared) are counted, and accuracy is also given on the untied items.
Mean and std (numpy's, ddof 0) are over seeds.

    python -m worker.sim.aggregation --data ../shared/data/music.npz --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.annotations.aggregation import aggregate

FOLDS = 5
L2 = 1e-2  # weight decay of the softmax regression, on standardised features
STEPS = 300  # full-batch Adam steps
LEARNING_RATE = 0.05

# (row name, method, uses the model's probabilities)
ROWS: tuple[tuple[str, str, bool], ...] = (
    ("majority", "majority", False),
    ("majority_tiebreak (random)", "majority_tiebreak", False),
    ("majority_tiebreak (model)", "majority_tiebreak", True),
    ("dawid_skene", "dawid_skene", False),
    ("crowdlab", "crowdlab", True),
)
MODEL_ROW = "model alone (cross-fitted)"


def votes_from_answers(answers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, annotators, classes) from an (N, A) answer matrix with -1 for no answer."""
    items, annotators = np.nonzero(answers >= 0)
    return items, annotators, answers[items, annotators].astype(np.int64)


def softmax_regression(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    l2: float = L2,
    steps: int = STEPS,
    learning_rate: float = LEARNING_RATE,
) -> np.ndarray:
    """Weights (D + 1, C), bias last, minimising soft cross-entropy + l2 * |W|^2 / 2.

    Zero start and full-batch Adam: the result depends on the data alone, not on a seed.
    """
    x = np.hstack([features, np.ones((len(features), 1))])
    weights = np.zeros((x.shape[1], targets.shape[1]))
    first, second = np.zeros_like(weights), np.zeros_like(weights)
    beta1, beta2 = 0.9, 0.999
    decay = np.ones_like(weights)
    decay[-1] = 0.0  # the bias is not shrunk
    for step in range(1, steps + 1):
        probs = _softmax(x @ weights)
        grad = x.T @ (probs - targets) / len(x) + l2 * decay * weights
        first = beta1 * first + (1 - beta1) * grad
        second = beta2 * second + (1 - beta2) * grad**2
        unbiased = first / (1 - beta1**step)
        scale = np.sqrt(second / (1 - beta2**step)) + 1e-8
        weights -= learning_rate * unbiased / scale
    return weights


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def fold_assignment(num_items: int, folds: int, seed: int) -> np.ndarray:
    """(N,) fold index per item: a seeded permutation dealt round-robin (sizes differ by <= 1)."""
    fold = np.empty(num_items, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(num_items)] = np.arange(num_items) % folds
    return fold


def cross_fit_probs(
    features: np.ndarray, targets: np.ndarray, *, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """(N, C) probabilities, each row from a model that never saw that row's targets."""
    x = np.asarray(features, dtype=np.float64)
    fold = fold_assignment(len(x), folds, seed)
    probs = np.empty(targets.shape)
    for k in range(folds):
        train, held = fold != k, fold == k
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        std[std == 0] = 1.0  # a constant feature stays 0 after centring
        weights = softmax_regression((x[train] - mean) / std, targets[train])
        held_x = (x[held] - mean) / std
        probs[held] = _softmax(np.hstack([held_x, np.ones((len(held_x), 1))]) @ weights)
    return probs


def _summary(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "per_seed": array.tolist()}


def run_aggregation_study(data_path: Path, seeds: list[int]) -> dict[str, Any]:
    """Accuracy against truth of every aggregation method on music.npz, per seed and summed up."""
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    with np.load(data_path) as archive:
        answers = archive["answers"]
        truth = archive["y_train"].astype(np.int64)
        features = archive["X_train"].astype(np.float64)
        num_classes = len(archive["classes"])
    items, annotators, classes = votes_from_answers(answers)
    shape = {
        "num_items": answers.shape[0],
        "num_annotators": answers.shape[1],
        "num_classes": num_classes,
    }
    vote_share = aggregate("majority", items, annotators, classes, **shape).posterior
    tied = aggregate("majority", items, annotators, classes, **shape).tied
    untied = ~tied

    accuracy: dict[str, list[float]] = {name: [] for name, _, _ in ROWS}
    untied_accuracy: dict[str, list[float]] = {name: [] for name, _, _ in ROWS}
    model_accuracy: list[float] = []
    for seed in seeds:
        probs = cross_fit_probs(features, vote_share, seed=seed)
        model_accuracy.append(float(np.mean(probs.argmax(axis=1) == truth)))
        for name, method, with_model in ROWS:
            result = aggregate(
                method,
                items,
                annotators,
                classes,
                **shape,
                model_probs=probs if with_model else None,
                seed=seed,
            )
            correct = result.label == truth
            accuracy[name].append(float(correct.mean()))
            untied_accuracy[name].append(float(correct[untied].mean()))

    return {
        "data": str(data_path),
        "seeds": list(seeds),
        "num_items": int(answers.shape[0]),
        "num_annotators": int(answers.shape[1]),
        "num_classes": int(num_classes),
        "num_votes": len(items),
        "tied_items": int(tied.sum()),
        "model": {
            "kind": "softmax regression on standardised features, soft majority-vote targets",
            "folds": FOLDS,
            "l2": L2,
            "steps": STEPS,
            "accuracy": _summary(model_accuracy),
        },
        "methods": {
            name: {
                "method": method,
                "uses_model": with_model,
                "accuracy": _summary(accuracy[name]),
                "accuracy_untied": _summary(untied_accuracy[name]),
            }
            for name, method, with_model in ROWS
        },
    }


def format_markdown(result: dict[str, Any]) -> str:
    """A table: accuracy (ties wrong) and accuracy on untied items, mean ± std over seeds."""
    seeds = ",".join(str(s) for s in result["seeds"])
    tied, n = result["tied_items"], result["num_items"]
    lines = [
        f"Music genres: {n} songs, {result['num_votes']} votes by {result['num_annotators']} "
        f"workers, {result['num_classes']} classes; {tied} songs tied ({n - tied} untied); "
        f"seeds {seeds}; mean ± std over seeds.",
        "",
        "| method | accuracy (ties wrong) | accuracy on untied items |",
        "| --- | --- | --- |",
    ]

    def cell(summary: dict[str, Any]) -> str:
        return f"{summary['mean']:.4f} ± {summary['std']:.4f}"

    for name, row in result["methods"].items():
        lines.append(f"| {name} | {cell(row['accuracy'])} | {cell(row['accuracy_untied'])} |")
    model = result["model"]
    lines.append(f"| {MODEL_ROW} | {cell(model['accuracy'])} | |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="music.npz")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    result = run_aggregation_study(args.data, seeds)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(format_markdown(result), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
