"""The heavy half of ``/progress``: per-person counts, agreement and quality, ties, cleaning.

They read every live vote of the project, so their cost grows with the labels (figures in
docs/reliability.md, issue 15 item 7) while dashboards poll every few seconds.
``PeopleStatsStore`` keeps the last result per project: a project whose statistics
took under ``INLINE_S`` to compute gets them fresh in every request (small projects, tests);
a larger one gets the last result at once, with ``as_of``, while one background thread per
project recomputes it when it is older than ``max_age_s``. So a request costs the same at
10^3 and 10^7 labels, and a client that leaves stops nothing it started.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from app.core.db import READ_ONLY, utcnow
from app.projects.models import Project
from app.reports.schemas import AnnotatorCount, CleaningProgress

log = logging.getLogger(__name__)
INLINE_S = 0.25  # statistics cheaper than this are computed in the request
_MAX_THREADS = 2  # background computations at once, over all projects


@dataclass(frozen=True)
class PeopleStats:
    per_annotator: list[AnnotatorCount]
    tied_items: int
    cleaning: CleaningProgress | None
    as_of: datetime
    seconds: float  # what computing them took


def compute(db: Session, project: Project) -> PeopleStats:
    from app.reports.progress import cleaning_progress, per_annotator, tied_items

    t0 = time.perf_counter()
    started = utcnow()
    people = per_annotator(db, project)
    tied = tied_items(db, project)
    cleaning = cleaning_progress(db, project)
    return PeopleStats(people, tied, cleaning, started, time.perf_counter() - t0)


class PeopleStatsStore:
    def __init__(self, factory: sessionmaker[Session], max_age_s: float) -> None:
        self._factory = factory
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._last: dict[int, PeopleStats] = {}
        self._running: set[int] = set()
        self._slots = threading.BoundedSemaphore(_MAX_THREADS)

    def get(self, db: Session, project: Project) -> PeopleStats:
        with self._lock:
            last = self._last.get(project.id)
        if last is None or last.seconds < INLINE_S or self._max_age_s <= 0:
            stats = compute(db, project)
            with self._lock:
                self._last[project.id] = stats
            return stats
        age = (utcnow() - last.as_of).total_seconds()
        if age >= self._max_age_s:
            self._refresh_in_background(project.id)
        return last

    def _refresh_in_background(self, project_id: int) -> None:
        with self._lock:
            if project_id in self._running:
                return
            self._running.add(project_id)
        threading.Thread(
            target=self._refresh, args=(project_id,), name="progress-stats", daemon=True
        ).start()

    def _refresh(self, project_id: int) -> None:
        bind = self._factory.kw["bind"]
        try:
            with (
                self._slots,
                bind.connect().execution_options(**{READ_ONLY: True}) as connection,
                Session(bind=connection) as db,
            ):
                project = db.get(Project, project_id)
                if project is not None:
                    stats = compute(db, project)
                    with self._lock:
                        self._last[project_id] = stats
        except Exception:
            log.exception("progress statistics of project %s failed", project_id)
        finally:
            with self._lock:
                self._running.discard(project_id)
