"""Strategy name -> class registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from worker.ml.strategies.base import Strategy, param_defaults
from worker.ml.strategy_params import check_params, strategy_only

_REGISTRY: dict[str, type[Strategy]] = {}

S = TypeVar("S", bound=type[Strategy])


def register(name: str) -> Callable[[S], S]:
    """Class decorator: make a Strategy available as ``get_strategy(name)``."""

    def deco(cls: S) -> S:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"strategy {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_strategies() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def get_strategy(name: str, **params: Any) -> Strategy:
    """A configured strategy; an unknown name or a bad parameter raises ``ValueError`` saying
    what is valid. Parameters are checked by ``worker.ml.strategy_params``, the rule the API
    applies when a project or cycle is created."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown strategy {name!r}; available: {available_strategies()}")
    # Training options (CEAL's "ceal") ride along in a cycle's params; the strategy ignores them.
    return cls(**strategy_only(check_params("acquire", name, params)))


def strategy_docs() -> dict[str, dict[str, Any]]:
    """name -> {"params": {param: default}, "paper": ..., "summary": ...} for every strategy."""
    return {
        name: {
            "params": param_defaults(cls),
            "paper": cls.paper,
            "summary": cls.summary,
        }
        for name, cls in sorted(_REGISTRY.items())
    }
