from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class GoldLabel(Base):
    """Known truth for one item: what evaluation scores against (test items) and what
    annotators are measured by (honeypots). Never a vote: the aggregation models and the
    budget do not see it."""

    __tablename__ = "gold_label"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"), unique=True)
    class_index: Mapped[int]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("annotator.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
