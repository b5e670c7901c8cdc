from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow

EVENTS = ("cycle.state_changed", "batch.labelled", "budget.spent")


class Webhook(Base):
    """A subscription: ``events`` is stored as ``,a,b,`` so the outbox triggers can match an
    event with one LIKE on both databases."""

    __tablename__ = "webhook"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    # Kept to sign each delivery (HMAC needs the key itself); shown once, at creation.
    secret: Mapped[str] = mapped_column(String(128))
    events: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("annotator.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def event_list(self) -> list[str]:
        return [e for e in self.events.split(",") if e]


class WebhookDelivery(Base):
    """One event for one subscription: the outbox row and, as it is tried, its log."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(
        ForeignKey("webhook.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)  # JSON text, as the trigger wrote it
    created_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), default="pending")  # delivered, failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None]
