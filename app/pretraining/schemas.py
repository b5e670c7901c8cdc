from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from app.core.enums import PretrainingStatus

# Caps as training's (worker/ml/config.py): one request must not hold a worker for days.
MAX_EPOCHS = 1_000
MAX_BATCH_SIZE = 8_192


class PretrainingCreate(BaseModel):
    """SimCLR settings; bad values are a 422 naming the key, and nothing is stored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(
        128, ge=2, le=MAX_BATCH_SIZE, description="Items per step (2x as many views)."
    )
    lr: float = Field(1e-3, gt=0, le=10, description="Adam's learning rate.")
    temperature: float = Field(0.5, gt=0, le=10, description="NT-Xent temperature.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Default: the project's.")


class PretrainingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    status: PretrainingStatus
    params: dict[str, Any] = Field(
        description="The request, its seed, and ``model``: the architecture it trained."
    )
    epochs_done: int
    losses: list[float] = Field(description="Mean NT-Xent loss of each epoch done.")
    checkpoint_sha256: str | None = Field(description="Blob of the latest epoch's state.")
    items: int | None
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def epochs(self) -> int:
        """Epochs asked for: progress is ``epochs_done`` of ``epochs``."""
        return int(self.params.get("epochs", 0))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def last_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None
