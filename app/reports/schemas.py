from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class AnnotatorCount(BaseModel):
    annotator_id: int
    name: str
    labels: int
    # Of this person's labels on items where the OTHER voters have a strict majority, the
    # share that agree with it; None (not measurable) when nobody else voted on their items,
    # e.g. with one label per item: a person never "agrees" with their own vote.
    agreement: float | None
    agreement_items: int
    # Measured on items with a gold label (honeypots): the share right, and how many.
    gold_accuracy: float | None
    gold_items: int
    # Dawid–Skene's estimate of P(correct) from all votes; None before anyone overlaps.
    estimated_accuracy: float | None


class CycleProgress(BaseModel):
    id: int
    number: int
    state: str
    queued: int
    done: int
    open: int


class CleaningProgress(BaseModel):
    relabel_budget: int | None
    items_cleaned: int  # relabelled until their votes settled; never picked again
    items_relabelled: int  # with at least one label beyond the imported ones
    majority_changed: int  # whose majority now differs from the imported labels' one


class Progress(BaseModel):
    labels_spent: int
    label_budget: int | None
    labels_remaining: int | None
    queue_depth: int  # open entries in the current batch
    slots_open: int  # labels still wanted by those entries, minus leased ones
    leases_open: int
    cycle: CycleProgress | None
    per_annotator: list[AnnotatorCount]
    labels_last_10_min: int
    rate_per_minute: float
    eta_seconds: float | None  # slots still wanted / recent rate; None when idle
    tied_items: int  # items whose votes tie: no label until more votes arrive
    cleaning: CleaningProgress | None = None
    # When per_annotator, tied_items and cleaning were computed (a large project's are
    # recomputed in the background, at most every ANNOLOOP_PROGRESS_STATS_MAX_AGE_S).
    stats_as_of: datetime | None = None
