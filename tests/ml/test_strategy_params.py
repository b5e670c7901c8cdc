"""The declared strategy parameters (worker/ml/strategy_params.py) are the constructors' own,
the registry applies them, and the API can import them without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.cycles.strategies import ACQUISITION_STRATEGIES, CLEANING_STRATEGIES
from worker.ml.cleaning import CLEANING_SCORES
from worker.ml.strategies import available_strategies, get_strategy, strategy_docs
from worker.ml.strategy_params import (
    ACQUISITION,
    CLEANING,
    MAX_CANDIDATES,
    MAX_MC_SAMPLES,
    MAX_NUM_SAMPLES,
    MAX_ZETA,
    ParamsError,
    check_params,
    declared_defaults,
)


def test_every_strategy_is_declared_once_with_its_constructors_parameters() -> None:
    assert set(ACQUISITION) == set(available_strategies()) == ACQUISITION_STRATEGIES
    for name, doc in strategy_docs().items():
        # Names and defaults of the constructor's keyword arguments: no drift.
        assert doc["params"] == declared_defaults("acquire", name), name
    assert set(CLEANING) == CLEANING_STRATEGIES
    assert set(CLEANING) == set(CLEANING_SCORES) - {"oracle"} | {"activelab"}


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("entropy", {"temperature": 2}, "temperature"),
        ("noise_stability", {"num_samples": MAX_NUM_SAMPLES + 1}, "num_samples"),
        ("noise_stability", {"zeta": float("inf")}, "zeta"),
        ("noise_stability", {"zeta": float("nan")}, "zeta"),
        ("noise_stability", {"zeta": 0}, "zeta"),
        ("bald", {"mc_samples": MAX_MC_SAMPLES + 1}, "mc_samples"),
        ("bald", {"mc_samples": "x"}, "mc_samples"),
        ("random", {"candidates": MAX_CANDIDATES + 1}, "candidates"),
        ("random", {"candidates": 2.0}, "candidates"),
        ("egl", {"scope": "last"}, "scope"),
        ("emoc", {"reference": 0}, "reference"),
        ("suggestive", {"weight_decay": float("inf")}, "weight_decay"),
        ("discriminative", {"max_epochs": 10**9}, "max_epochs"),
        ("typiclust", {"embedding": "pixels"}, "embedding"),
        ("probcover", {"delta": 0.0}, "delta"),
        ("probcover", {"purity": 0}, "purity"),
        ("bgadl", {"generator": "acgan"}, "generator"),
    ],
)
def test_the_registry_refuses_what_the_api_refuses(
    name: str, params: dict[str, object], key: str
) -> None:
    with pytest.raises(ParamsError, match=key) as api:
        check_params("acquire", name, params)
    assert api.value.key == key
    with pytest.raises(ValueError, match=key):
        get_strategy(name, **params)


def test_the_caps_are_values_the_constructors_take() -> None:
    caps = {"num_samples": MAX_NUM_SAMPLES, "zeta": MAX_ZETA, "candidates": MAX_CANDIDATES}
    assert get_strategy("noise_stability", **caps).params == caps
    assert get_strategy("bald", mc_samples=MAX_MC_SAMPLES).params["mc_samples"] == MAX_MC_SAMPLES
    for name in available_strategies():
        defaults = declared_defaults("acquire", name)
        assert get_strategy(name, **defaults).params == defaults


def test_whole_numbers_become_floats_as_json_cannot_tell_them_apart() -> None:
    assert check_params("acquire", "noise_stability", {"zeta": 1}) == {"zeta": 1.0}
    assert get_strategy("noise_stability", zeta=1).params["zeta"] == 1.0


def test_cleaning_params_are_the_folds() -> None:
    assert check_params("clean", "joint", {"folds": 0, "fold_seed": 7}) == {
        "folds": 0,
        "fold_seed": 7,
    }
    for params, key in (({"folds": 1}, "folds"), ({"folds": 51}, "folds"), ({"k": 1}, "k")):
        with pytest.raises(ParamsError) as err:
            check_params("clean", "activelab", params)
        assert err.value.key == key


def test_the_api_side_imports_no_torch() -> None:
    probe = (
        "import sys, worker.ml.strategy_params, app.projects.schemas, app.cycles.service; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
