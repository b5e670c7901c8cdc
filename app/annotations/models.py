from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.enums import LabelSource, str_enum

_ACTIVE_HUMAN = "source = 'human' AND retracted_at IS NULL"


class Annotation(Base):
    """One crowd label. Rows are never updated in place: an undo sets ``retracted_at``.

    The item's label is derived from its active annotations (see ``app.annotations.votes``).
    """

    __tablename__ = "annotation"
    __table_args__ = (
        UniqueConstraint("annotator_id", "idempotency_key"),
        # One live human label per annotator and item, enforced by the database itself.
        Index(
            "uq_annotation_item_annotator_human",
            "item_id",
            "annotator_id",
            unique=True,
            sqlite_where=text(_ACTIVE_HUMAN),
            postgresql_where=text(_ACTIVE_HUMAN),
        ),
        # /progress: the labels of the last minutes, by range (migration 0006).
        Index("ix_annotation_project_created", "project_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    # No index of its own: the (annotator_id, idempotency_key) constraint's index serves it.
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator.id"))
    class_index: Mapped[int]
    source: Mapped[LabelSource] = mapped_column(str_enum(LabelSource, "label_source"))
    cycle_id: Mapped[int | None] = mapped_column(ForeignKey("cycle.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retracted_at: Mapped[datetime | None]

    @property
    def is_live_human(self) -> bool:
        """Counts against "one live human label per annotator and item"."""
        return self.source is LabelSource.human and self.retracted_at is None
