"""An item's label is derived from its votes, never stored: counts, majority, tie."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class VoteSummary:
    counts: list[int]  # (C,) votes per class index
    total: int
    majority: int | None  # the class with strictly more votes than any other, else None
    tied: bool  # at least one vote and the top count is shared

    @property
    def distribution(self) -> list[float]:
        """The soft label used as the training target: counts / total."""
        return [c / self.total for c in self.counts] if self.total else []


def summarise(class_indices: Iterable[int], num_classes: int) -> VoteSummary:
    counts = [0] * num_classes
    for k in class_indices:
        counts[k] += 1
    total = sum(counts)
    if total == 0:
        return VoteSummary(counts, 0, None, False)
    top = max(counts)
    leaders = [k for k, c in enumerate(counts) if c == top]
    if len(leaders) > 1:
        return VoteSummary(counts, total, None, True)
    return VoteSummary(counts, total, leaders[0], False)
