from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.enums import CycleState, ProjectKind, str_enum


class Cycle(Base):
    """One round of train → score → label; everything needed to reproduce it is stored here."""

    __tablename__ = "cycle"
    __table_args__ = (UniqueConstraint("project_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    number: Mapped[int]
    kind: Mapped[ProjectKind] = mapped_column(str_enum(ProjectKind, "cycle_kind"))
    state: Mapped[CycleState] = mapped_column(
        str_enum(CycleState, "cycle_state"), default=CycleState.created
    )
    strategy: Mapped[str] = mapped_column(String(50))
    params: Mapped[dict[str, Any]]
    seed: Mapped[int]
    batch_size: Mapped[int]
    labelled_set_hash: Mapped[str | None] = mapped_column(String(64))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    scores_sha256: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    # ``hparams.init = "pretraining"``: the run and checkpoint ``features`` started from.
    pretraining_id: Mapped[int | None] = mapped_column(ForeignKey("pretraining.id"))
    pretraining_sha256: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    # The Celery id of the run task message that claimed it last: only that message's
    # redelivery may take over a cycle left training or scoring (``transitions.claim``).
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("annotator.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
