from __future__ import annotations

import pytest

from worker.ml.strategies import available_strategies, get_strategy, strategy_docs


def test_core_names_registered() -> None:
    names = available_strategies()
    for name in ("random", "least_confidence", "margin", "entropy"):
        assert name in names


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"available: .*entropy"):
        get_strategy("nope")


def test_unknown_param_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"valid: \['candidates', 'ceal'\]"):
        get_strategy("entropy", temperature=2)


def test_bad_candidates_value() -> None:
    with pytest.raises(ValueError, match="candidates"):
        get_strategy("entropy", candidates=0)


def test_docs_and_params() -> None:
    docs = strategy_docs()
    assert set(docs) == set(available_strategies())
    for doc in docs.values():
        assert "candidates" in doc["params"]
        assert doc["paper"]
    assert get_strategy("margin", candidates=5).params == {"candidates": 5}


def test_candidate_indices_seeded_sorted_subset() -> None:
    s = get_strategy("entropy", candidates=10)
    a = s.candidate_indices(100, seed=1)
    assert a is not None
    assert a.tolist() == sorted(set(a.tolist()))
    assert len(a) == 10
    assert a.tolist() == s.candidate_indices(100, seed=1).tolist()  # type: ignore[union-attr]
    assert a.tolist() != s.candidate_indices(100, seed=2).tolist()  # type: ignore[union-attr]
    assert s.candidate_indices(10, seed=1) is None
    assert get_strategy("entropy").candidate_indices(100, seed=1) is None
