"""``music-al``: active learning (acquisition) with real crowd answers as the oracle.

``../shared/data/music.npz`` (Rodrigues et al. 2013): 700 songs with 1-7 Mechanical Turk
answers each (4.2 on average, about 44 % of single answers wrong), 124 audio features, and 300
more songs with features and the true genre only. Decisions (issue 18's evidence, second bullet):

- pool: the 700 crowd-labelled songs; test: the file's own 300 test songs, scored against their
  TRUE genre. Features standardised with the pool's mean and std, the test songs too;
- oracle: a requested label is ONE of the song's real answers, drawn uniformly
  (``CrowdOracle`` on the song's answer counts, ``default_rng([seed, song, draw])``), so every
  strategy of a seed gets the same answer for the same song. The model trains on these noisy
  labels; the pool's truth is never used;
- initial labels: 20 songs drawn uniformly with the run seed (``initial_size``), labelled by
  the oracle like any other: a user with crowd answers has no truth to stratify by, so the
  start may miss a genre (MNIST's protocol draws 2 per true class);
- budget: +20 labels per cycle for 14 cycles, accuracy at 20, 40, ..., 300 labels;
- model: music-clean's ``mlp`` (256-128, dropout 0.5), Adam 1e-3, batch 64, 50 epochs,
  re-initialised every cycle;
- candidates: none. MNIST scores a seeded 1,000 of 8,000; here every strategy scores the whole
  unlabelled pool (at most 680 songs), which is cheap;
- strategies: every registered one (read from the registry when this module is imported, so a
  strategy added later is in the default list and runs by name with ``--strategies``), plus
  ``margin+ceal`` (CEAL's pseudo-labels on margin, as on MNIST). A strategy the ``mlp`` cannot
  serve (``learning_loss``: no loss-prediction taps) is skipped with the API's 422 reason
  (``strategy_params.check_model_fits``) in ``results.json``'s ``meta.not_applicable``.

``music-al-exact`` is the same protocol with the exact oracle (the pool song's true genre):
what the strategies do on these songs when the labels are clean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from worker.ml.strategies import available_strategies
from worker.sim.oracle import CrowdOracle
from worker.sim.protocol import Arrays, DataSource, Protocol

MUSIC_AL_DATA = DataSource(
    "../shared/data/music.npz",
    images="X_train",
    labels="y_train",  # the pool's truth: not used by the loop (crowd oracle, uniform start)
    counts="answers",
    answers=True,
    standardise=True,
    test_images="X_test",
    test_labels="y_test",
)

_MLP = {
    "name": "mlp",
    "input_shape": [124],
    "hparams": {"epochs": 50, "batch_size": 64, "lr": 1e-3},
}


def _every_strategy() -> tuple[str, ...]:
    names = [n for n in available_strategies() if n != "random"]
    return ("random", *names, "margin+ceal")


_MUSIC_AL = Protocol(
    name="music-al",
    data=MUSIC_AL_DATA,
    pool_size=700,
    test_size=300,
    split_seed=0,  # unused: the file has its own split
    initial_per_class=0,  # unused: initial_size draws uniformly
    initial_size=20,
    batch_size=20,
    cycles=14,
    model=_MLP,
    candidates=None,
    oracle="crowd",
    strategies=_every_strategy(),
    seeds=(0, 1, 2, 3, 4),
)

MUSIC_AL_PROTOCOLS: dict[str, Protocol] = {
    "music-al": _MUSIC_AL,
    # The reference for what the crowd's noise costs: the same songs, initial draws, model and
    # seeds, but every label is the song's TRUE genre (as MNIST's exact oracle).
    "music-al-exact": _MUSIC_AL.with_overrides(name="music-al-exact", oracle="exact"),
}


def acquired_noise(doc: Mapping[str, Any], arrays: Arrays) -> dict[str, dict[str, float]]:
    """Per strategy, over the labelled acquisitions of every run in a ``results.json`` doc
    (every cycle's queue but the last): the share of crowd labels that were wrong (the
    oracle's answers replayed: each song is asked once, so draw 0) and the expected share,
    1 - the song's share of answers on its true genre. Do uncertain picks get noisier labels?"""
    n = len(arrays.labels) - arrays.fixed_test
    assert arrays.counts is not None
    counts, truth = arrays.counts[:n], arrays.labels[:n]
    p_true = counts[np.arange(n), truth] / counts.sum(axis=1)
    by: dict[str, list[tuple[float, float]]] = {}
    for run in doc["runs"]:
        oracle = CrowdOracle(arrays.labels, arrays.counts, run["seed"])
        rows = [row for cycle in run["cycles"][:-1] for row in cycle["selected"]]
        wrong = np.mean([oracle.answer(row) != truth[row] for row in rows])
        by.setdefault(run["strategy"], []).append((float(wrong), float(1 - p_true[rows].mean())))
    return {
        s: {
            "wrong": float(np.mean([w for w, _ in v])),
            "expected": float(np.mean([e for _, e in v])),
        }
        for s, v in by.items()
    }
