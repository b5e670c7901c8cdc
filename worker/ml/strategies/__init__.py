"""Acquisition strategies: one interface (``base.Strategy``) and a name registry.

Importing this package registers every built-in strategy.
"""

# Imported for their side effect: each module registers its strategies.
from worker.ml.strategies import (  # noqa: F401
    bald,
    bgadl,
    discriminative,
    diversity,
    kernel_based,
    learning_loss,
    model_change,
    qbc,
    representative,
    uncertainty,
    vaal,
)
from worker.ml.strategies.base import (
    ScoringContext,
    Selection,
    Strategy,
    merge_shards,
)
from worker.ml.strategies.registry import (
    available_strategies,
    get_strategy,
    register,
    strategy_docs,
)

__all__ = [
    "ScoringContext",
    "Selection",
    "Strategy",
    "available_strategies",
    "get_strategy",
    "merge_shards",
    "register",
    "strategy_docs",
]
