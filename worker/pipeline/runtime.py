"""Per-process handles a worker task needs: settings, engine, session factory, blobs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import app.db_models  # noqa: F401  (mappers)
from app.core.blobs import BlobStore, open_blob_store
from app.core.config import Settings, get_settings
from app.core.db import make_engine, make_session_factory
from app.core.tasks import TaskSender
from worker.ml import backbones, run_encoders
from worker.ml.tensor_cache import TensorCache


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    blobs: BlobStore
    # Decoded items shared by every read of a cycle (None: decode on every read).
    tensors: TensorCache | None = None


def build_runtime(settings: Settings) -> Runtime:
    engine = (
        make_engine(settings.database_url, pool_size=2, max_overflow=2)
        if not (settings.is_sqlite)
        else make_engine(settings.database_url)
    )
    # Remote blobs are read through a local copy: training reads each item every epoch.
    blobs = open_blob_store(settings, cache=True)
    backbones.configure(
        {
            name: backbones.BackboneSource(name, v["arch"], v["weights"], v["sha256"])
            for name, v in settings.backbone_sources.items()
        },
        settings.backbone_cache,
    )
    run_encoders.configure(blobs.get)  # a pretraining run used as a backbone: its checkpoint
    tensors = (
        TensorCache(settings.tensor_cache, settings.tensor_cache_bytes)
        if settings.tensor_cache_bytes > 0
        else None
    )
    return Runtime(settings, engine, make_session_factory(engine), blobs, tensors)


@lru_cache
def runtime() -> Runtime:
    """Built lazily in each (forked) worker process, never shared across a fork."""
    return build_runtime(get_settings())


def celery_sender() -> TaskSender:
    """Sends through the worker's Celery app."""
    # Imported late: the pipeline runs without Celery in tests and benchmarks.
    from app.core.tasks import CelerySender
    from worker.celery_app import celery_app

    return CelerySender(celery_app)
