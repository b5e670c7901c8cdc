"""Gauges computed from the database at scrape time.

Each scrape runs a handful of small grouped queries, so the numbers are the same whichever
API process answers and survive restarts: open queue entries, labels stored in the last
minute, cycles by state, the age of running cycles and recent cycles' phase durations.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.annotations.models import Annotation
from app.core.db import utcnow
from app.core.enums import CycleState, LabelSource, QueueState
from app.cycles.models import Cycle
from app.observability.cycle_timings import phases as cycle_phases
from app.projects.models import Project
from app.queue.models import QueueEntry

log = logging.getLogger(__name__)
RECENT_CYCLES = 10  # per project, for the mean phase durations
_RUNNING = (CycleState.training, CycleState.scoring)


class DatabaseCollector(Collector):
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "annoloop_database_up", "1 if the scrape-time database queries succeeded."
        )
        seconds = GaugeMetricFamily(
            "annoloop_database_scrape_seconds", "Time spent on the scrape-time queries."
        )
        started = time.perf_counter()
        try:
            with self.session_factory() as db:
                families = _collect(db)
        except Exception:
            # A scrape must still answer while the database is down: that is when it matters.
            log.warning("metrics: database queries failed", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        seconds.add_metric([], time.perf_counter() - started)
        yield up
        yield seconds
        yield from families


def _collect(db: Session) -> list[Metric]:
    projects = [str(p) for p in db.scalars(select(Project.id).order_by(Project.id))]
    return [
        _queue_depth(db, projects),
        _labels_last_minute(db, projects),
        _cycles_by_state(db, projects),
        _running_age(db),
        *_phase_durations(db),
    ]


def _queue_depth(db: Session, projects: list[str]) -> Metric:
    family = GaugeMetricFamily(
        "annoloop_queue_open_entries",
        "Queue entries still waiting for labels (state=open), per project.",
        labels=["project"],
    )
    rows = db.execute(
        select(QueueEntry.project_id, func.count())
        .where(QueueEntry.state == QueueState.open)
        .group_by(QueueEntry.project_id)
    )
    counts = {str(p): int(n) for p, n in rows}
    for project in projects:
        family.add_metric([project], counts.get(project, 0))
    return family


def _labels_last_minute(db: Session, projects: list[str]) -> Metric:
    family = GaugeMetricFamily(
        "annoloop_labels_last_minute",
        "Annotations created in the last 60 s (from the database), per project and source.",
        labels=["project", "source"],
    )
    since = utcnow() - timedelta(minutes=1)
    rows = db.execute(
        select(Annotation.project_id, Annotation.source, func.count())
        .where(Annotation.created_at >= since)
        .group_by(Annotation.project_id, Annotation.source)
    )
    counts = {(str(p), str(s)): int(n) for p, s, n in rows}
    for project in projects:
        for source in LabelSource:
            family.add_metric([project, source.value], counts.get((project, source.value), 0))
    return family


def _cycles_by_state(db: Session, projects: list[str]) -> Metric:
    family = GaugeMetricFamily(
        "annoloop_cycles",
        "Cycles per project and state; use delta() on state=failed to alert on failures.",
        labels=["project", "state"],
    )
    rows = db.execute(
        select(Cycle.project_id, Cycle.state, func.count()).group_by(Cycle.project_id, Cycle.state)
    )
    counts = {(str(p), str(s)): int(n) for p, s, n in rows}
    for project in projects:
        for state in CycleState:
            family.add_metric([project, state.value], counts.get((project, state.value), 0))
    return family


def _running_age(db: Session) -> Metric:
    family = GaugeMetricFamily(
        "annoloop_cycle_running_seconds",
        "Age of the oldest cycle in training or scoring, per project (absent when none runs).",
        labels=["project"],
    )
    now = utcnow()
    oldest: dict[str, float] = {}
    rows = db.execute(
        select(Cycle.project_id, Cycle.started_at).where(
            Cycle.state.in_(_RUNNING), Cycle.started_at.is_not(None)
        )
    )
    for project_id, started_at in rows:
        if started_at is None:
            continue
        age = (now - started_at).total_seconds()
        key = str(project_id)
        oldest[key] = max(oldest.get(key, 0.0), age)
    for project, age in sorted(oldest.items()):
        family.add_metric([project], age)
    return family


def _phase_durations(db: Session) -> list[Metric]:
    last = GaugeMetricFamily(
        "annoloop_cycle_phase_seconds",
        "Phase durations (train, evaluate, score, ...) of the project's latest timed cycle.",
        labels=["project", "phase"],
    )
    mean = GaugeMetricFamily(
        "annoloop_cycle_phase_mean_seconds",
        f"Mean phase durations over the project's last {RECENT_CYCLES} timed cycles.",
        labels=["project", "phase"],
    )
    rows = db.execute(
        select(Cycle.project_id, Cycle.timings)
        .where(Cycle.state.in_((CycleState.labeling, CycleState.completed)))
        .order_by(Cycle.id.desc())
        .limit(RECENT_CYCLES * 100)  # bounds the scrape on old installations
    )
    recent: dict[str, list[dict[str, float]]] = defaultdict(list)
    for project_id, timings in rows:
        phases = cycle_phases(timings)
        if phases and len(recent[str(project_id)]) < RECENT_CYCLES:
            recent[str(project_id)].append(phases)
    for project, cycles in sorted(recent.items()):
        for phase, value in sorted(cycles[0].items()):
            last.add_metric([project, phase], value)
        totals: dict[str, list[float]] = defaultdict(list)
        for phases in cycles:
            for phase, value in phases.items():
                totals[phase].append(value)
        for phase, values in sorted(totals.items()):
            mean.add_metric([project, phase], sum(values) / len(values))
    return [last, mean]
