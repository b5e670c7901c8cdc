from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, true
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.enums import ProjectKind, str_enum


class Project(Base):
    __tablename__ = "project"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[ProjectKind] = mapped_column(str_enum(ProjectKind, "project_kind"))
    # Class names in index order: annotations store the index, so the order is part of the data.
    classes: Mapped[list[Any]]
    model_spec: Mapped[dict[str, Any]]
    strategy: Mapped[str] = mapped_column(String(50))
    strategy_params: Mapped[dict[str, Any]]
    labels_per_item: Mapped[int] = mapped_column(default=1)
    label_budget: Mapped[int | None]
    # Human and oracle labels given so far; a conditional UPDATE on it enforces the budget.
    labels_spent: Mapped[int] = mapped_column(default=0)
    batch_size: Mapped[int]
    relabel_budget: Mapped[int | None]
    finetune_every: Mapped[int | None]
    auto_advance: Mapped[bool] = mapped_column(default=False)
    # Cleaning: held-out predictions from K folds judge each labelled item (0 = in-sample).
    crossfit_folds: Mapped[int] = mapped_column(default=5, server_default="5")
    # How votes become an item's label (``app.annotations.aggregation``); votes stay as given.
    aggregation: Mapped[str] = mapped_column(
        String(30), default="majority", server_default="majority"
    )
    # Share of each queue given to pool items with a gold label (annotator accuracy).
    honeypot_rate: Mapped[float] = mapped_column(default=0.0, server_default="0")
    # Stop asking for an item once no label its entry still wants could change its majority.
    stop_when_decided: Mapped[bool] = mapped_column(default=True, server_default=true())
    # Adaptive labels per item: stop asking once an item's top class has this one-coin
    # posterior (``app.annotations.confidence``); None = labels_per_item labels.
    confidence_target: Mapped[float | None]
    seed: Mapped[int] = mapped_column(default=0)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("annotator.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def budget(self) -> int | None:
        """The budget that ``labels_spent`` counts against: relabels when cleaning."""
        return self.relabel_budget if self.kind is ProjectKind.clean else self.label_budget


class ProjectMember(Base):
    """Who may work on a project; admins see every project without a membership."""

    __tablename__ = "project_member"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(
        ForeignKey("annotator.id"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
