from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.enums import ProjectKind
from app.core.ids import IdField
from app.cycles.strategies import ACQUISITION_STRATEGIES, CLEANING_STRATEGIES
from worker.ml.spec import PRETRAINING_BACKBONE, ModelSpec, check_feature_name
from worker.ml.strategy_params import MAX_FOLDS, check_params

ClassName = Annotated[str, Field(min_length=1, max_length=100)]
AggregationMethod = Literal["majority", "majority_tiebreak", "dawid_skene", "crowdlab"]


class ModelSpecIn(BaseModel):
    """Which network the worker trains; ``num_classes`` comes from the project's classes."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["small_cnn", "resnet18", "mlp", "pretrained"]
    input_shape: list[Annotated[int, Field(ge=1, le=100_000)]] = Field(min_length=1, max_length=3)
    hparams: dict[str, Any] = Field(default_factory=dict)
    input: str | None = Field(
        None,
        description="The named feature vector of each item the model takes (uploaded as "
        "`features_<name>` with the items or later by external id); the items' images stay "
        "what annotators see. Default: the item's own payload.",
    )

    @field_validator("input")
    @classmethod
    def _input_name(cls, name: str | None) -> str | None:
        return None if name is None else check_feature_name(name, "input")

    @model_validator(mode="after")
    def _shape_fits_model(self) -> ModelSpecIn:
        expected = {"small_cnn": 3, "resnet18": 3, "mlp": 1, "pretrained": 3}[self.name]
        if len(self.input_shape) != expected:
            raise ValueError(f"{self.name} takes an input_shape of {expected} dimension(s)")
        # The project's own pretraining run was fitted on its images: grey or colour.
        own_run = self.name == "pretrained" and self.hparams.get("backbone") == PRETRAINING_BACKBONE
        if own_run and self.input_shape[0] not in (1, 3):
            raise ValueError("pretrained on a pretraining run takes grey or colour images")
        if self.name in ("resnet18", "pretrained") and not own_run and self.input_shape[0] != 3:
            raise ValueError(f"{self.name} takes colour images: input_shape (3, H, W)")
        if (
            self.name == "pretrained"
            and not 16 <= min(self.input_shape[1:]) <= max(self.input_shape[1:]) <= 1024
        ):
            raise ValueError("pretrained takes images of 16 to 1024 pixels a side")
        if self.name == "small_cnn":
            # The worker converts and resizes each image to this shape; two poolings need >= 12.
            channels, height, width = self.input_shape
            if channels not in (1, 3) or min(height, width) < 12 or max(height, width) > 512:
                raise ValueError(
                    "small_cnn takes grey or colour images of 12 to 512 pixels a side: "
                    "input_shape (1 or 3, H, W), e.g. (1, 28, 28) for MNIST"
                )
        return self


class _ProjectSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy_params: dict[str, Any] | None = None
    labels_per_item: int | None = Field(None, ge=1, le=100)
    # Upper bounds: the columns are 32-bit INTEGER on Postgres (a larger value was a 500).
    label_budget: int | None = Field(None, ge=0, le=2**31 - 1)
    batch_size: int | None = Field(None, ge=1, le=100_000)
    relabel_budget: int | None = Field(None, ge=0, le=2**31 - 1)
    finetune_every: int | None = Field(None, ge=1, le=2**31 - 1)
    auto_advance: bool | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    crossfit_folds: int | None = Field(
        None,
        ge=0,
        le=MAX_FOLDS,
        description="Cleaning: folds of the held-out predictions that score labelled items "
        "(default 5; 0 = the model scores the items it trained on, for comparison only).",
    )
    aggregation: AggregationMethod | None = Field(
        None,
        description="How votes become an item's label: majority (ties stay open), "
        "majority_tiebreak, dawid_skene, crowdlab (default majority).",
    )

    honeypot_rate: float | None = Field(
        None,
        ge=0.0,
        le=0.5,
        description="Share of each queue given to pool items with a gold label, so every "
        "annotator's accuracy is measured (default 0).",
    )

    stop_when_decided: bool | None = Field(
        None,
        description="With labels_per_item > 1, stop asking for an item once the labels it "
        "still wants could not change its majority (default true).",
    )

    confidence_target: float | None = Field(
        None,
        gt=0.5,
        le=0.999,
        description="With labels_per_item > 1, stop asking for an item once its top class "
        "reaches this posterior under the one-coin model, with the annotators' accuracy "
        "as Dawid–Skene estimates it from the votes so far (default: off).",
    )

    @field_validator("crossfit_folds")
    @classmethod
    def _folds(cls, folds: int | None) -> int | None:
        if folds == 1:
            raise ValueError("crossfit_folds is 0 (in-sample) or at least 2")
        return folds


class ProjectCreate(_ProjectSettings):
    name: str = Field(min_length=1, max_length=200)
    kind: ProjectKind = ProjectKind.acquire
    classes: list[ClassName] = Field(min_length=2, max_length=1000)
    model_spec: ModelSpecIn
    strategy: str | None = Field(
        None, description="Default: entropy (acquire), ce_minus_entropy (clean)."
    )
    labels_per_item: int | None = Field(1, ge=1, le=100)
    batch_size: int | None = Field(100, ge=1, le=100_000)
    auto_advance: bool | None = False
    seed: int | None = Field(0, ge=0, le=2**31 - 1)

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[str]) -> list[str]:
        if len(set(classes)) != len(classes):
            raise ValueError("class names must be unique")
        return classes

    @model_validator(mode="after")
    def _model_spec_trains(self) -> ProjectCreate:
        # The worker's own validation (torch-free), so a spec it would refuse when the
        # cycle runs is refused now, naming the key: hparams, their values and caps.
        spec = {**self.model_spec.model_dump(exclude_none=True), "num_classes": len(self.classes)}
        try:
            ModelSpec.from_dict(spec)
        except ValueError as exc:
            raise ValueError(f"model_spec: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _strategy_fits_kind(self) -> ProjectCreate:
        if self.strategy is None:
            self.strategy = "entropy" if self.kind is ProjectKind.acquire else "ce_minus_entropy"
        check_strategy(self.kind, self.strategy)
        # The worker's own parameter rule (torch-free), so a cycle cannot fail on it later.
        try:
            check_params(self.kind.value, self.strategy, self.strategy_params or {})
        except ValueError as exc:
            raise ValueError(f"strategy_params: {exc}") from exc
        # Whether the model meets the strategy's needs is the service's check (``check_fits``),
        # so creation answers ``strategy_needs`` naming the need, as PATCH and POST /cycles do.
        return self


class ProjectUpdate(_ProjectSettings):
    name: str | None = Field(None, min_length=1, max_length=200)
    strategy: str | None = None


def check_strategy(kind: ProjectKind, strategy: str) -> None:
    names = ACQUISITION_STRATEGIES if kind is ProjectKind.acquire else CLEANING_STRATEGIES
    if strategy not in names:
        raise ValueError(f"unknown {kind.value} strategy {strategy!r}; choose from {sorted(names)}")


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: ProjectKind
    classes: list[str]
    model_spec: dict[str, Any]
    strategy: str
    strategy_params: dict[str, Any]
    labels_per_item: int
    label_budget: int | None
    labels_spent: int
    batch_size: int
    relabel_budget: int | None
    finetune_every: int | None
    auto_advance: bool
    seed: int
    crossfit_folds: int
    aggregation: str
    honeypot_rate: float
    stop_when_decided: bool
    confidence_target: float | None
    created_at: datetime
    updated_at: datetime


class MemberAdd(BaseModel):
    annotator_id: IdField
