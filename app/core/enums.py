"""Enumerations stored in the database (as strings, so SQLite and Postgres agree)."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import Enum


class Role(enum.StrEnum):
    admin = "admin"
    engineer = "engineer"
    annotator = "annotator"


class ProjectKind(enum.StrEnum):
    acquire = "acquire"
    clean = "clean"


class Split(enum.StrEnum):
    pool = "pool"
    test = "test"


class LabelSource(enum.StrEnum):
    human = "human"
    import_ = "import"
    oracle = "oracle"


class CycleState(enum.StrEnum):
    created = "created"
    training = "training"
    scoring = "scoring"
    labeling = "labeling"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class PretrainingStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class QueueState(enum.StrEnum):
    open = "open"
    done = "done"
    cancelled = "cancelled"


class LeaseOutcome(enum.StrEnum):
    labelled = "labelled"
    skipped = "skipped"
    expired = "expired"
    cancelled = "cancelled"


def str_enum(cls: type[enum.StrEnum], name: str) -> Enum:
    """A VARCHAR column with a CHECK constraint holding the enum's values."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


def values(cls: type[enum.StrEnum]) -> list[Any]:
    return [m.value for m in cls]
