from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Event = Literal["cycle.state_changed", "batch.labelled", "budget.spent"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="http(s) URL that receives POSTs.")
    events: list[Event] = Field(min_length=1, max_length=10)
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=128,
        description="HMAC-SHA256 key for X-Annoloop-Signature; default: a random one, "
        "shown once in the answer.",
    )

    @field_validator("events")
    @classmethod
    def _distinct(cls, events: list[str]) -> list[str]:
        return list(dict.fromkeys(events))


class WebhookOut(BaseModel):
    id: int
    project_id: int
    url: str
    events: list[str]
    active: bool
    created_at: datetime


class WebhookWithSecret(WebhookOut):
    secret: str


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    webhook_id: int
    event: str
    payload: dict[str, Any]
    created_at: datetime
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
