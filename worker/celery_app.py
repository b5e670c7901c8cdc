"""The Celery application: queues, reliability settings, and the task modules to load.

Importing this module does not import torch: the API uses the same app to *send* tasks by
name. Only a worker process loads ``worker.tasks`` (via ``include``).

Reliability: ``acks_late`` + ``prefetch 1`` + ``reject_on_worker_lost`` means a task is only
acknowledged after it finished, and a worker killed mid-task gives its message back to the
broker; tasks are idempotent, so a redelivery produces one result.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready
from kombu import Queue

from app.core.config import Settings, get_settings
from app.observability.celery_signals import connect_worker_signals

QUEUES = ("default", "train", "score")


def create_celery(settings: Settings) -> Celery:
    settings.ensure_dirs()
    app = Celery(
        "annoloop",
        broker=settings.broker_url,
        backend=settings.result_backend,
        include=[
            "worker.tasks.cycles",
            "worker.tasks.scoring",
            "worker.tasks.cleaning",
            "worker.tasks.ensemble",
        ],
    )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        task_queues=[Queue(name) for name in QUEUES],
        task_routes={
            "annoloop.cycles.run": {"queue": "train"},
            "annoloop.cycles.advance": {"queue": "default"},
            "annoloop.cycles.refresh": {"queue": "default"},
            # Sharded scoring: any worker on "score" (GPU hosts) takes shards and the merge.
            "annoloop.scoring.shard": {"queue": "score"},
            "annoloop.scoring.merge": {"queue": "score"},
            # Cleaning's fold models train wherever cycles train.
            "annoloop.cleaning.fold": {"queue": "train"},
            "annoloop.cleaning.merge": {"queue": "train"},
            # Ensemble members train wherever cycles train; so does their join (it evaluates).
            "annoloop.ensemble.member": {"queue": "train"},
            "annoloop.ensemble.join": {"queue": "train"},
        },
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


@worker_ready.connect
def _recover(sender: object = None, **kwargs: object) -> None:
    from worker.recovery import resend_orphaned_cycles

    resend_orphaned_cycles(sender=sender)
