from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.enums import Split, str_enum


class Item(Base):
    """One pool or test item; its payload lives in the blob store under ``blob_sha256``."""

    __tablename__ = "item"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        Index("ix_item_project_split_id", "project_id", "split", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    split: Mapped[Split] = mapped_column(str_enum(Split, "split"))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    media_type: Mapped[str] = mapped_column(String(50))
    width: Mapped[int]
    height: Mapped[int]
    external_id: Mapped[str] = mapped_column(String(255))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ItemFeature(Base):
    """A named feature vector of an item, for models (``model_spec.input`` names it), while
    the item's own payload (an image) is what people see. Float32 little-endian, in the blob
    store like every payload; at most one vector per (item, name), replaced by a new upload."""

    __tablename__ = "item_feature"
    __table_args__ = (
        UniqueConstraint("item_id", "name"),
        Index("ix_item_feature_project_name", "project_id", "name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    name: Mapped[str] = mapped_column(String(64))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
