from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.enums import LeaseOutcome, QueueState, str_enum


class QueueEntry(Base):
    """An item a cycle wants labelled, in rank order, with how many labels it still wants."""

    __tablename__ = "queue_entry"
    __table_args__ = (
        UniqueConstraint("cycle_id", "item_id"),
        # Matches the ORDER BY of the pick (rank, then id): the first free entry is found by
        # walking the index, whatever the table statistics say.
        Index("ix_queue_entry_project_state_rank_id", "project_id", "state", "rank", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    # No index of its own: the (cycle_id, item_id) constraint's index serves cycle lookups.
    cycle_id: Mapped[int] = mapped_column(ForeignKey("cycle.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"), index=True)
    rank: Mapped[int]
    score: Mapped[float | None] = mapped_column(Float)
    labels_wanted: Mapped[int]
    # Adaptive labels per item: the entry is done once its item's top class leads the
    # runner-up by this many votes (``app.annotations.confidence``); None = no such rule.
    stop_lead: Mapped[int | None]
    # Kept on the row (not counted from other tables) so that "is a slot free?" is decided
    # on the row a transaction has locked: FOR UPDATE re-checks it, a subquery would not.
    labels_received: Mapped[int] = mapped_column(default=0)
    leases_open: Mapped[int] = mapped_column(default=0)
    state: Mapped[QueueState] = mapped_column(
        str_enum(QueueState, "queue_state"), default=QueueState.open
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """An item handed to one annotator until ``expires_at``; closed rows keep the history."""

    __tablename__ = "lease"
    __table_args__ = (
        Index(
            "uq_lease_item_annotator_open",
            "item_id",
            "annotator_id",
            unique=True,
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
        Index("ix_lease_entry_open", "queue_entry_id", "released_at"),
        # Live leases by project, then annotator: a caller's held leases (every `next` asks)
        # and the project's open count (budget checks); closed leases leave it.
        Index(
            "ix_lease_open_by_project",
            "project_id",
            "annotator_id",
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
        Index(
            "ix_lease_open_expiry",
            "expires_at",
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    queue_entry_id: Mapped[int] = mapped_column(ForeignKey("queue_entry.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    released_at: Mapped[datetime | None]
    outcome: Mapped[LeaseOutcome | None] = mapped_column(str_enum(LeaseOutcome, "lease_outcome"))
