"""Strategy name -> class registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from worker.ml.strategies.base import Strategy, param_defaults, param_names

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
    """A configured strategy; an unknown name or parameter raises ``ValueError`` listing options."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown strategy {name!r}; available: {available_strategies()}")
    valid = param_names(cls)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} for strategy {name!r}; valid: {valid}")
    return cls(**params)


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
