from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from app.core.enums import PretrainingStatus

# Caps as training's (worker/ml/config.py): one request must not hold a worker for days.
MAX_EPOCHS = 1_000
MAX_BATCH_SIZE = 8_192
# k-means caps: the fit holds ``patches`` x C*P*P float64 three times over (raw, normalised,
# whitened) and encoding a batch holds (batch, positions, centroids) distances.
MAX_PATCH = 16
MAX_CENTROIDS = 4_096
MAX_PATCHES = 400_000
MAX_ITERATIONS = 100

Method = Literal["simclr", "patch_kmeans"]
# The image bodies a SimCLR run can train for a ``pretrained`` project, which has none of its
# own (``ModelSpec.body_key`` at the project's image shape).
Architecture = Literal["small_cnn", "resnet18"]
SIMCLR_DEFAULTS: dict[str, Any] = {"epochs": 20, "batch_size": 128, "lr": 1e-3, "temperature": 0.5}
# SimCLR settings with no default, kept out of ``params`` (the architecture is ``model``).
SIMCLR_ONLY: dict[str, Any] = {"architecture": None}
KMEANS_DEFAULTS: dict[str, Any] = {
    "patch": 6,
    "centroids": 800,
    "patches": 100_000,
    "iterations": 10,
}


class PretrainingCreate(BaseModel):
    """One run's method and its settings; bad values are a 422 naming the key, and nothing is
    stored. A setting of the other method is refused (not ignored): a request that names
    ``patch`` for SimCLR was meant for something else."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Method = Field(
        "simclr",
        description="simclr: contrastive training of the model's body (epochs, batch_size, "
        "lr, temperature; architecture for a pretrained model). patch_kmeans: k-means on "
        "whitened image patches (patch, centroids, patches, iterations), minutes on a CPU; "
        "image projects only.",
    )
    # SimCLR (defaults in SIMCLR_DEFAULTS)
    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="simclr; default 20.")
    batch_size: int | None = Field(
        None,
        ge=2,
        le=MAX_BATCH_SIZE,
        description="simclr: items per step (2x as many views); default 128.",
    )
    lr: float | None = Field(None, gt=0, le=10, description="simclr: Adam's; default 0.001.")
    temperature: float | None = Field(
        None, gt=0, le=10, description="simclr: NT-Xent temperature; default 0.5."
    )
    # patch k-means (defaults in KMEANS_DEFAULTS)
    patch: int | None = Field(
        None, ge=2, le=MAX_PATCH, description="patch_kmeans: patch side P; default 6."
    )
    centroids: int | None = Field(
        None,
        ge=2,
        le=MAX_CENTROIDS,
        description="patch_kmeans: K; the features are 4K wide; default 800.",
    )
    patches: int | None = Field(
        None, ge=100, le=MAX_PATCHES, description="patch_kmeans: patches drawn; default 100000."
    )
    iterations: int | None = Field(
        None, ge=1, le=MAX_ITERATIONS, description="patch_kmeans: Lloyd rounds; default 10."
    )
    architecture: Architecture | None = Field(
        None,
        description="simclr: the body to train at the project's image shape. Required when "
        "the project's model is `pretrained` (it has no body of its own; a `backbone: "
        '"pretraining"` project then uses the run frozen); otherwise it may only name the '
        "project's own model.",
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Default: the project's.")

    @model_validator(mode="after")
    def _one_method(self) -> PretrainingCreate:
        other = KMEANS_DEFAULTS if self.method == "simclr" else {**SIMCLR_DEFAULTS, **SIMCLR_ONLY}
        given = sorted(set(other) & self.model_fields_set)
        if given:
            own = [*self.defaults(), *(SIMCLR_ONLY if self.method == "simclr" else ())]
            raise ValueError(
                f"{given[0]}: not a setting of method {self.method!r} (its settings: "
                f"{', '.join(own)}, seed)"
            )
        return self

    def defaults(self) -> dict[str, Any]:
        return SIMCLR_DEFAULTS if self.method == "simclr" else KMEANS_DEFAULTS

    def settings(self) -> dict[str, Any]:
        """The method, its settings with defaults filled in, and the seed (None: unset)."""
        given = self.model_dump()
        out: dict[str, Any] = {"method": self.method}
        out |= {k: v if given[k] is None else given[k] for k, v in self.defaults().items()}
        return out | {"seed": self.seed}


class PretrainingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    status: PretrainingStatus
    params: dict[str, Any] = Field(
        description="The method, its settings, the seed, and ``model``: the architecture it "
        "trained (SimCLR: the body key, the project's model's or the requested "
        "``architecture`` at the project's image shape; patch_kmeans: the image shape it was "
        "fitted on)."
    )
    epochs_done: int
    losses: list[float] = Field(description="Mean NT-Xent loss of each epoch done (SimCLR).")
    checkpoint_sha256: str | None = Field(
        description="Blob of the latest epoch's state (patch_kmeans: the fitted encoder)."
    )
    items: int | None
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def method(self) -> Method:
        """simclr or patch_kmeans (runs from before the choice are SimCLR)."""
        return "patch_kmeans" if self.params.get("method") == "patch_kmeans" else "simclr"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def epochs(self) -> int:
        """Progress is ``epochs_done`` of ``epochs`` (patch_kmeans: one step, 0 then 1)."""
        return 1 if self.method == "patch_kmeans" else int(self.params.get("epochs", 0))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def last_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None
