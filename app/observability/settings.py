"""Operations settings, read from ``ANNOLOOP_*`` like the main ``Settings``.

A separate class so the observability package owns its knobs; the settings reference in
``docs/deploy.md`` is generated from both classes (``scripts/settings_reference.py``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ObservabilitySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ANNOLOOP_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    log_format: Literal["text", "json"] = Field(
        "text",
        description="`json`: one JSON object per line (time, level, logger, message, "
        "request_id, task_id, extras); `text` for a terminal.",
    )
    metrics_token: str | None = Field(
        None,
        description="If set, `/metrics` wants `Authorization: Bearer <token>`; unset = open, "
        "except in production, where `/metrics` then answers 403.",
    )
    worker_metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="A worker serves its Prometheus metrics (task failures, durations, cycle "
        "phases) on this port; unset = off.",
    )
    worker_metrics_dir: Path | None = Field(
        None,
        description="Scratch folder for the worker's multiprocess metrics; unset = a new "
        "temporary folder per worker start.",
    )


@lru_cache
def get_observability_settings() -> ObservabilitySettings:
    return ObservabilitySettings()
