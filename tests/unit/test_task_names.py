"""The task table (``app.core.task_names``) is what the worker registers and Celery routes."""

from __future__ import annotations

import importlib
import inspect

from app.core.task_names import ALL_TASKS, QUEUES
from app.observability.celery_signals import FIRST_ARG_FIELD
from worker.celery_app import celery_app


def test_the_worker_registers_every_task_of_the_table_and_no_other() -> None:
    for module in celery_app.conf.include:
        importlib.import_module(module)
    registered = {name for name in celery_app.tasks if name.startswith("annoloop.")}
    assert registered == {task.name for task in ALL_TASKS}
    assert len(registered) == len(ALL_TASKS)


def test_each_task_is_routed_to_its_queue_and_logs_its_first_argument() -> None:
    routes = celery_app.conf.task_routes
    assert {t.name: routes[t.name]["queue"] for t in ALL_TASKS} == {
        t.name: t.queue for t in ALL_TASKS
    }
    assert {t.queue for t in ALL_TASKS} <= set(QUEUES)
    assert {q.name for q in celery_app.conf.task_queues} == set(QUEUES)
    for module in celery_app.conf.include:
        importlib.import_module(module)
    for task in ALL_TASKS:
        assert FIRST_ARG_FIELD[task.name] == task.first_arg
        run = celery_app.tasks[task.name].run
        first = next(p for p in inspect.signature(run).parameters if p != "self")
        assert first == task.first_arg, task.name
