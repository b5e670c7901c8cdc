"""What a run reports per cycle; plain data so it goes to JSON as it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CycleRecord:
    cycle: int  # 0-based
    labels: int  # votes on pool items the model was trained on (initial labels included)
    accuracy: float  # on the protocol's test split
    selected: list[int]  # data rows queued by this cycle, in rank order
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class RunRecord:
    protocol: str
    mode: str  # "direct" or "api"
    strategy: str
    seed: int
    cycles: list[CycleRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        cycles = [CycleRecord(**c) for c in data["cycles"]]
        return cls(data["protocol"], data["mode"], data["strategy"], data["seed"], cycles)
