"""Reading a cycle's ``timings`` JSON as phase durations."""

from __future__ import annotations

from typing import Any


def phases(timings: Any) -> dict[str, float]:
    """``{"train_s": 1.2, "score_s": 0.3}`` → ``{"train": 1.2, "score": 0.3}``; non-numbers
    are dropped (the column is free-form JSON)."""
    if not isinstance(timings, dict):
        return {}
    return {
        str(key).removesuffix("_s"): float(value)
        for key, value in timings.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
