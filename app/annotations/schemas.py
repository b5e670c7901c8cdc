from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.enums import LabelSource


class AnnotationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    class_index: int = Field(ge=0, description="Index into the project's class list.")
    idempotency_key: str | None = Field(
        None,
        min_length=8,
        max_length=100,
        description="Client-chosen; resending the same key returns the first result.",
    )


class AnnotationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    item_id: int
    project_id: int
    annotator_id: int
    class_index: int
    source: LabelSource
    cycle_id: int | None
    idempotency_key: str | None
    created_at: datetime
    retracted_at: datetime | None


class ImportRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=255)
    annotator: str = Field(min_length=1, max_length=100)
    class_index: int | None = Field(None, ge=0)
    class_name: str | None = None


class ImportResult(BaseModel):
    created: int
    skipped_duplicates: int
    annotators_created: int
