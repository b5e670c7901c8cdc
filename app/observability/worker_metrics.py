"""A worker's Prometheus endpoint (off unless ``ANNOLOOP_WORKER_METRICS_PORT`` is set).

Celery's prefork pool runs tasks in child processes, and the task signals fire there, so the
counters use prometheus_client's multiprocess mode: each child writes its values to files in
a scratch folder and the parent's HTTP server adds them up. That mode is chosen from
``PROMETHEUS_MULTIPROC_DIR`` when metric objects are made, so ``start`` sets it, then makes
the metrics, all before the pool forks. Every function here is a no-op while it is off.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerMetrics:
    tasks: Any  # Counter{task, state}
    failures: Any  # Counter{task, exception}
    task_seconds: Any  # Histogram{task}
    phase_seconds: Any  # Histogram{project, phase}


_metrics: WorkerMetrics | None = None


def start(port: int, directory: Path | None = None) -> Path:
    """Choose the multiprocess folder, make the metrics, serve them on ``port``."""
    global _metrics
    folder = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="annoloop-metrics-"))
    # Files left by an earlier run would be added to this run's counters.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)

    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Histogram,
        multiprocess,
        start_http_server,
        values,
    )

    # If something imported prometheus_client earlier it picked the single-process values.
    values.ValueClass = values.get_value_class()
    _metrics = WorkerMetrics(
        tasks=Counter(
            "annoloop_worker_tasks",
            "Tasks finished by this worker, by task name and final state.",
            ["task", "state"],
        ),
        failures=Counter(
            "annoloop_worker_task_failures",
            "Tasks that raised, by task name and exception type.",
            ["task", "exception"],
        ),
        task_seconds=Histogram(
            "annoloop_worker_task_duration_seconds",
            "Wall time of a task in the pool process.",
            ["task"],
            buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
        ),
        phase_seconds=Histogram(
            "annoloop_cycle_phase_duration_seconds",
            "Cycle phase durations (train, evaluate, score), observed when a cycle queues.",
            ["project", "phase"],
            buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
        ),
    )
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry)
    log.info(
        "worker metrics on :%d", port, extra={"metrics_port": port, "metrics_dir": str(folder)}
    )
    return folder


def enabled() -> bool:
    return _metrics is not None


def task_finished(task: str, state: str | None, seconds: float | None) -> None:
    if _metrics is None:
        return
    _metrics.tasks.labels(task=task, state=state or "UNKNOWN").inc()
    if seconds is not None:
        _metrics.task_seconds.labels(task=task).observe(seconds)


def task_failed(task: str, exception: BaseException | None) -> None:
    if _metrics is None:
        return
    name = type(exception).__name__ if exception is not None else "unknown"
    _metrics.failures.labels(task=task, exception=name).inc()


def cycle_phases(project_id: int, phases: dict[str, float]) -> None:
    if _metrics is None:
        return
    for phase, value in phases.items():
        _metrics.phase_seconds.labels(project=str(project_id), phase=phase).observe(value)


def process_exited(pid: int) -> None:
    if _metrics is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
