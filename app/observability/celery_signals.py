"""Celery signal handlers: JSON logging in the worker, task ids on every log line, the
originating request id carried from the API to the task, cycle summaries, worker metrics.

``connect_worker_signals`` is called when ``worker.celery_app`` is imported, so the API
process connects them too; there only ``before_task_publish`` ever fires. Handlers never
raise: observability must not fail a task.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals

from app.observability import context, worker_metrics
from app.observability.cycle_timings import phases
from app.observability.logs import configure_logging
from app.observability.settings import get_observability_settings

log = logging.getLogger("annoloop.tasks")
REQUEST_ID_HEADER = "annoloop_request_id"
# Which field the first argument of a task is: it goes on every log line of the task.
FIRST_ARG_FIELD = {
    "annoloop.cycles.run": "cycle_id",
    "annoloop.cycles.advance": "project_id",
    "annoloop.cycles.refresh": "project_id",
    "annoloop.scoring.shard": "cycle_id",
    "annoloop.scoring.merge": "cycle_id",
    "annoloop.cleaning.fold": "cycle_id",
    "annoloop.cleaning.merge": "cycle_id",
    "annoloop.ensemble.member": "cycle_id",
    "annoloop.ensemble.join": "cycle_id",
}
_started: dict[str, float] = {}
_state_before: dict[str, str | None] = {}


def connect_worker_signals() -> None:
    """Idempotent (``dispatch_uid``); strong references, the handlers are module functions."""
    for signal, handler in (
        (signals.setup_logging, _setup_logging),
        (signals.worker_init, _worker_init),
        (signals.before_task_publish, _before_task_publish),
        (signals.task_prerun, _task_prerun),
        (signals.task_postrun, _task_postrun),
        (signals.task_failure, _task_failure),
        (signals.worker_shutting_down, _worker_shutting_down),
        (signals.worker_process_shutdown, _worker_process_shutdown),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"annoloop.{handler.__name__}")


def _setup_logging(**_: Any) -> None:
    # Connecting to this signal stops Celery from installing its own handlers.
    configure_logging()


def _worker_init(**_: Any) -> None:
    """Runs in the worker's main process before the pool forks."""
    obs = get_observability_settings()
    if obs.worker_metrics_port is not None:
        try:
            worker_metrics.start(obs.worker_metrics_port, obs.worker_metrics_dir)
        except OSError:
            # A busy port must not keep the worker from working; the log says why.
            log.exception("worker metrics: cannot listen on %s", obs.worker_metrics_port)
    _watch_labelled_set_hash()


def _before_task_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """In the sender (the API): the task carries the request that caused it."""
    request_id = context.current().get("request_id")
    if headers is not None and request_id and REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = request_id


def _task_prerun(
    task_id: str | None = None,
    task: Any = None,
    args: tuple[Any, ...] | None = None,
    **_: Any,
) -> None:
    context.clear()  # one pool process runs task after task in the same context
    try:
        name = str(getattr(task, "name", "?"))
        request = getattr(task, "request", None)
        fields: dict[str, Any] = {"task_id": task_id, "task_name": name}
        request_id = getattr(request, REQUEST_ID_HEADER, None)
        if request_id:
            fields["request_id"] = request_id
        if name in FIRST_ARG_FIELD and args:
            fields[FIRST_ARG_FIELD[name]] = args[0]
        context.bind(**fields)
        if task_id:
            _started[task_id] = time.perf_counter()
        delivery = getattr(request, "delivery_info", None) or {}
        log.info(
            "task started",
            extra={"redelivered": bool(delivery.get("redelivered")), "retries": _retries(task)},
        )
        if "cycle_id" in fields and task_id:
            _state_before[task_id] = _cycle_state(fields["cycle_id"])
    except Exception:
        log.warning("task_prerun hook failed", exc_info=True)


def _task_postrun(
    task_id: str | None = None,
    task: Any = None,
    args: tuple[Any, ...] | None = None,
    retval: Any = None,
    state: str | None = None,
    **_: Any,
) -> None:
    try:
        name = str(getattr(task, "name", "?"))
        started = _started.pop(task_id, None) if task_id else None
        seconds = time.perf_counter() - started if started is not None else None
        worker_metrics.task_finished(name, state, seconds)
        fields: dict[str, Any] = {
            "task_state": state,
            "duration_s": round(seconds, 3) if seconds is not None else None,
            "outcome": retval if isinstance(retval, str | int | float | None) else repr(retval),
        }
        cycle_id = context.current().get("cycle_id")
        before = _state_before.pop(task_id, None) if task_id else None
        if cycle_id is not None and FIRST_ARG_FIELD.get(name) == "cycle_id":
            fields.update(_cycle_summary(int(cycle_id), before))
            log.info("cycle task finished", extra=fields)
        else:
            log.info("task finished", extra=fields)
    except Exception:
        log.warning("task_postrun hook failed", exc_info=True)
    finally:
        context.clear()


def _task_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    # Celery itself logs the traceback (with our task id bound); here we only count.
    try:
        worker_metrics.task_failed(str(getattr(sender, "name", "?")), exception)
    except Exception:
        log.warning("task_failure hook failed", exc_info=True)


def _worker_shutting_down(sig: str | None = None, how: str | None = None, **_: Any) -> None:
    # "Warm": running tasks finish first; "Cold": they are abandoned and, thanks to
    # acks_late + reject_on_worker_lost, redelivered to another worker.
    log.info("worker shutting down", extra={"signal": sig, "how": how})


def _worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if pid is not None:
        worker_metrics.process_exited(pid)


def _retries(task: Any) -> int:
    return int(getattr(getattr(task, "request", None), "retries", 0) or 0)


def _cycle_state(cycle_id: int) -> str | None:
    from app.cycles.models import Cycle
    from worker.pipeline.runtime import runtime

    with runtime().factory() as db:
        cycle = db.get(Cycle, cycle_id)
        return None if cycle is None else str(cycle.state)


def _cycle_summary(cycle_id: int, state_before: str | None) -> dict[str, Any]:
    """The row as the task left it: the ids a label trace needs, and the phase timings."""
    from app.core.enums import CycleState
    from app.cycles.models import Cycle
    from worker.pipeline.runtime import runtime

    with runtime().factory() as db:
        cycle = db.get(Cycle, cycle_id)
        if cycle is None:
            return {"cycle_state": None}
        timings = phases(cycle.timings)
        if cycle.labelled_set_hash:
            context.bind(labelled_set_hash=cycle.labelled_set_hash)
        # Observe the phases once: only for the task that moved the cycle into labelling
        # (a redelivered task finds it there already and does nothing).
        if cycle.state is CycleState.labeling and state_before != CycleState.labeling.value:
            worker_metrics.cycle_phases(cycle.project_id, timings)
        return {
            "project_id": cycle.project_id,
            "cycle_number": cycle.number,
            "cycle_state": str(cycle.state),
            "attempts": cycle.attempts,
            "labelled_set_hash": cycle.labelled_set_hash,
            "checkpoint_sha256": cycle.checkpoint_sha256,
            "scores_sha256": cycle.scores_sha256,
            "timings": timings,
            "error": cycle.error,
        }


def _watch_labelled_set_hash() -> None:
    """Bind ``labelled_set_hash`` as soon as the pipeline snapshots the training set, so the
    training, evaluation and scoring lines of the task carry it, not only the last one."""
    from sqlalchemy import event

    from app.cycles.models import Cycle

    if not event.contains(Cycle.labelled_set_hash, "set", _on_labelled_set_hash):
        event.listen(Cycle.labelled_set_hash, "set", _on_labelled_set_hash)


def _on_labelled_set_hash(target: Any, value: Any, _old: Any, _initiator: Any) -> None:
    if value and context.current().get("task_id"):
        context.bind(labelled_set_hash=value)
        log.info(
            "cycle training set snapshotted",
            extra={"cycle_id": getattr(target, "id", None), "labelled_set_hash": value},
        )
