"""The worker's own /metrics: task failures (Celery ``task_failure``), task outcomes and
durations, summed over pool processes. Run in a child process because multiprocess mode
changes prometheus_client for the whole process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.deploy.scrape import sample
from tests.integration.processes import free_port

SCRIPT = textwrap.dedent(
    """
    import os, sys, urllib.request
    from celery import signals
    from app.observability import worker_metrics
    from app.observability.celery_signals import connect_worker_signals

    port, folder = int(sys.argv[1]), sys.argv[2]
    connect_worker_signals()
    worker_metrics.start(port, folder)

    class Task:
        name = "annoloop.cycles.run"

    # One failure counted in a forked "pool process", one in this process.
    pid = os.fork()
    if pid == 0:
        signals.task_failure.send(sender=Task(), task_id="t1", exception=ValueError("x"))
        worker_metrics.task_finished(Task.name, "FAILURE", 0.5)
        os._exit(0)
    os.waitpid(pid, 0)
    signals.task_failure.send(sender=Task(), task_id="t2", exception=KeyError("y"))
    worker_metrics.task_finished(Task.name, "SUCCESS", 2.0)
    url = f"http://127.0.0.1:{port}/metrics"
    sys.stdout.write(urllib.request.urlopen(url, timeout=10).read().decode())
    """
)


def test_failures_from_every_pool_process_are_served(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(port), str(tmp_path / "metrics")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    task = "annoloop.cycles.run"
    failures = "annoloop_worker_task_failures_total"
    assert sample(text, failures, task=task, exception="ValueError") == 1
    assert sample(text, failures, task=task, exception="KeyError") == 1
    assert sample(text, "annoloop_worker_tasks_total", task=task, state="FAILURE") == 1
    assert sample(text, "annoloop_worker_tasks_total", task=task, state="SUCCESS") == 1
    assert sample(text, "annoloop_worker_task_duration_seconds_count", task=task) == 2
    assert sample(text, "annoloop_worker_task_duration_seconds_sum", task=task) == 2.5
