from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.core.enums import Split


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    split: Split
    external_id: str
    blob_sha256: str
    media_type: str
    width: int
    height: int
    meta: dict[str, Any]
    created_at: datetime


class DerivedLabelOut(BaseModel):
    """The label the project's aggregation model derives from the item's live votes."""

    method: str
    class_index: int | None
    label: str | None
    posterior: list[float]
    tied: bool  # the vote counts have no strict majority, whatever the method decided


class LabelledItemOut(ItemOut):
    """An item as engineers see it: with its derived label (annotators never get one)."""

    derived: DerivedLabelOut | None = None


class BulkResult(BaseModel):
    created: int
    first_id: int | None
    last_id: int | None
    splits: dict[str, int]


class FeatureSetOut(BaseModel):
    """One name of feature vectors in a project."""

    name: str
    dim: int
    items: int  # items that have a vector of this name
    missing: int  # items that have none
    model_input: bool  # the project's model takes this vector (``model_spec.input``)


class FeaturesUploaded(BaseModel):
    stored: dict[str, int]  # vectors stored (new or replaced) per name
