"""The Celery application: queues, reliability settings, and the task modules to load.

Importing this module does not import torch: the API uses the same app to *send* tasks by
name. Only a worker process loads ``worker.tasks`` (via ``include``). Nor does it create
folders: a worker makes the embedded setup's folders when it starts (``worker_init``), the
blob store makes a blob's folder when it first writes one, and importing the module from
any directory (a test, a script, a shell) leaves that directory as it was.

Reliability: ``acks_late`` + ``prefetch 1`` + ``reject_on_worker_lost`` means a task is only
acknowledged after it finished, and a worker killed mid-task gives its message back to the
broker; tasks are idempotent, so a redelivery produces one result.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_init, worker_ready
from kombu import Queue

from app.core.config import Settings, get_settings
from app.core.task_names import ALL_TASKS, DEFAULT_QUEUE, QUEUES
from app.observability.celery_signals import connect_worker_signals


def create_celery(settings: Settings) -> Celery:
    app = Celery(
        "annoloop",
        broker=settings.broker_url,
        backend=settings.result_backend,
        include=[
            "worker.tasks.cycles",
            "worker.tasks.scoring",
            "worker.tasks.cleaning",
            "worker.tasks.ensemble",
            "worker.tasks.pretraining",
        ],
    )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=DEFAULT_QUEUE,
        task_queues=[Queue(name) for name in QUEUES],
        task_routes={task.name: {"queue": task.queue} for task in ALL_TASKS},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_track_started=True,
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
    )
    return app


def _transport_options(settings: Settings) -> dict[str, object]:
    if settings.broker_url.startswith("sqla+"):
        # Kombu hands these to SQLAlchemy's create_engine: wait on a busy SQLite file.
        return {"connect_args": {"timeout": 30}}
    return {"visibility_timeout": settings.broker_visibility_timeout}


celery_app = create_celery(get_settings())
connect_worker_signals()  # JSON logs, task ids on log lines, worker metrics


@worker_init.connect
def _make_dirs(sender: object = None, **kwargs: object) -> None:
    # The embedded broker's and results' SQLite files need their folder before the worker
    # connects; the API makes them in create_app.
    get_settings().ensure_dirs()


@worker_ready.connect
def _recover(sender: object = None, **kwargs: object) -> None:
    from worker.recovery import resend_orphaned_cycles

    resend_orphaned_cycles(sender=sender)
