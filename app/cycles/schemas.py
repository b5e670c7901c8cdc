from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.enums import CycleState, ProjectKind


class CycleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: str | None = Field(None, description="Default: the project's strategy.")
    params: dict[str, Any] | None = Field(
        None,
        description="Default: the project's params. Checked against the strategy's declared "
        "parameters and caps (worker/ml/strategy_params.py): 422 naming the key.",
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Default: project seed + n.")
    batch_size: int | None = Field(None, ge=1, le=100_000)


class CycleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    number: int
    kind: ProjectKind
    state: CycleState
    strategy: str
    params: dict[str, Any]
    seed: int
    batch_size: int
    labelled_set_hash: str | None
    checkpoint_sha256: str | None
    scores_sha256: str | None
    metrics: dict[str, Any]
    timings: dict[str, Any]
    error: str | None
    pretraining_id: int | None = Field(
        description="hparams.init = 'pretraining': the run whose checkpoint features began from."
    )
    pretraining_sha256: str | None = Field(description="That run's checkpoint blob.")
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class QueueEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    cycle_id: int
    item_id: int
    rank: int
    score: float | None
    labels_wanted: int
    state: str


class ScoreHistogram(BaseModel):
    """The distribution of acquisition scores over the scored pool of one cycle."""

    cycle_id: int
    strategy: str
    n: int
    edges: list[float]
    counts: list[int]
    selected_scores: list[float]


class StrategyOut(BaseModel):
    """One strategy a project or cycle may name, as ``worker/ml/strategy_params.py`` declares it."""

    name: str
    kind: ProjectKind
    params: dict[str, dict[str, Any]] = Field(
        description="Each parameter's JSON Schema: type, default, minimum/maximum (the caps), "
        "nullable, description."
    )
    needs: list[str] = Field(description="What the project's model must have; else 422.")
