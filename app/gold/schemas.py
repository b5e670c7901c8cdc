from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class GoldRow(BaseModel):
    """One known truth: the item by external id, the class by index or name."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=255)
    class_index: int | None = Field(None, ge=0)
    class_name: str | None = None


class GoldImportResult(BaseModel):
    created: int
    unchanged: int  # already gold with the same class: re-uploading a file is harmless
    test_items: int  # of all rows, how many are test items (evaluation)
    pool_items: int  # and how many pool items (honeypots)


class GoldOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    item_id: int
    class_index: int
    created_at: datetime
