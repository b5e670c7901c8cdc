from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.enums import PretrainingStatus, str_enum


class Pretraining(Base):
    """One self-supervised (SimCLR) run over a project's pool; its checkpoint is what cycles
    with ``model_spec.hparams.init = "pretraining"`` start their ``features`` from.

    ``params`` holds the request (epochs, batch_size, lr, temperature, seed) and the
    architecture it trained (``model``: the body key of the project's model at the start, or
    of the requested ``architecture`` for a ``pretrained`` project), so a checkpoint is only
    used by a model it fits. ``checkpoint_sha256`` is the blob-store key of the latest epoch's
    resumable state (``worker.ml.ssl.PretrainState``); an earlier epoch's blob is deleted once
    a later one is recorded.
    """

    __tablename__ = "pretraining"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    status: Mapped[PretrainingStatus] = mapped_column(
        str_enum(PretrainingStatus, "pretraining_status"), default=PretrainingStatus.queued
    )
    params: Mapped[dict[str, Any]]
    epochs_done: Mapped[int] = mapped_column(default=0)
    losses: Mapped[list[Any]] = mapped_column(default=list)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    items: Mapped[int | None]  # pool items it trained on
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    # The Celery id of the task message that claimed it last: only that message's redelivery
    # may take over a run left running (``worker.pipeline.pretrain``).
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("annotator.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
