from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from app.items.schemas import ItemOut


class LeaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    item_id: int
    queue_entry_id: int
    expires_at: datetime
    created_at: datetime


class AheadOut(BaseModel):
    """The item after the current one, already leased to the caller (``next?ahead=1``)."""

    lease: LeaseOut
    item: ItemOut
    cycle_id: int | None = None


EmptyReason = Literal["others_needed", "cycle_running", "pool_spent", "no_cycle"]


class NextOut(BaseModel):
    """What an annotator should do now.

    ``leased``: label ``item`` before ``lease.expires_at``. ``queue_empty``: nothing to label
    until the next cycle queues items (``cycle_state`` says whether one is running).
    ``budget_spent``: the project's label budget is used up. ``ahead``: with ``?ahead=1``,
    the next item, leased too, when there is one.
    """

    status: Literal["leased", "queue_empty", "budget_spent"]
    lease: LeaseOut | None = None
    item: ItemOut | None = None
    cycle_id: int | None = None
    cycle_state: str | None = None
    ahead: AheadOut | None = None
    # Why the queue is empty for the caller (``queue_empty`` only): ``others_needed``: every
    # queued item still open wants a label from someone else (``waiting_for_others`` of
    # them); ``cycle_running``: the worker is preparing the next items; ``pool_spent``:
    # nothing is left to label or relabel; ``no_cycle``: no cycle is queueing items (an
    # engineer starts the next one).
    reason: EmptyReason | None = None
    waiting_for_others: int | None = None
