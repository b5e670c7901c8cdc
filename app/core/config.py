"""Settings: one class, read from ``ANNOLOOP_*`` environment variables (and ``.env``).

The defaults are the embedded setup — a SQLite file, a SQLite-backed Kombu broker and a blob
folder, all under ``data_dir`` — so ``annoloop up`` works on a laptop with nothing else
installed. Production sets ``ANNOLOOP_DATABASE_URL=postgresql+psycopg://…`` and
``ANNOLOOP_BROKER_URL=redis://…``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "annoloop-development-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANNOLOOP_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = Field(
        "development", description="`production` refuses the default secret."
    )
    data_dir: Path = Field(
        Path("./annoloop-data"), description="Root of the embedded SQLite files and blobs."
    )
    database_url: str = Field("", description="SQLAlchemy URL; empty = SQLite in data_dir.")
    broker_url: str = Field("", description="Celery broker; empty = SQLite Kombu transport.")
    result_backend: str = Field("", description="Celery result backend; empty = SQLite.")
    blob_dir: Path | None = Field(None, description="Content-addressed blobs; default data_dir.")
    secret_key: str = Field(DEFAULT_SECRET, description="HMAC key for token hashes.")

    lease_seconds: int = Field(600, ge=10, description="How long an annotator holds an item.")
    max_upload_bytes: int = Field(10 * 1024**2, ge=1024, description="One image upload.")
    max_bulk_bytes: int = Field(512 * 1024**2, ge=1024, description="One bulk archive.")
    max_json_bytes: int = Field(1024**2, ge=1024, description="One JSON request body.")
    max_pixels: int = Field(16_000_000, ge=1, description="Width × height of one image.")
    max_page_size: int = Field(500, ge=1, description="Upper bound for `limit` on lists.")
    log_level: str = Field("INFO", description="Python logging level.")
    worker_concurrency: int = Field(1, ge=1, description="Celery worker processes per host.")
    broker_visibility_timeout: int = Field(
        3600, ge=5, description="Redis: seconds before an unacked task is redelivered."
    )
    rate_limit_labels_per_minute: int = Field(
        600, ge=0, description="Label submissions per annotator per minute; 0 = no limit."
    )
    rate_limit_auth_failures_per_minute: int = Field(
        30,
        ge=0,
        description="Failed token checks per client IP per minute before that IP gets 429 "
        "(slows token guessing); 0 = no limit.",
    )
    max_in_flight: int = Field(
        4,
        ge=1,
        le=1000,
        description="Requests one API process works on at once; the rest wait without holding "
        "a thread, connection or lock (docs/reliability.md). /healthz and /metrics are exempt.",
    )
    async_hot_path: bool = Field(
        True,
        description="Postgres: serve the annotator's `next` and label submission from an "
        "async connection pool with hand-written SQL (app/fastpath) instead of the ORM in a "
        "thread; about 3x the labels/s on 2 cores (docs/reliability.md).",
    )
    shard_size: int = Field(
        20_000,
        ge=0,
        description="Pools with more scored candidates than this are scored in shards by a "
        "Celery group on any worker, then merged; 0 = never shard.",
    )

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        data = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{data / 'annoloop.sqlite'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{data / 'broker.sqlite'}"
        if not self.result_backend:
            self.result_backend = f"db+sqlite:///{data / 'results.sqlite'}"
        if self.blob_dir is None:
            self.blob_dir = data / "blobs"
        if self.environment == "production" and self.secret_key == DEFAULT_SECRET:
            raise ValueError(
                "ANNOLOOP_SECRET_KEY is the development default; set a long random secret "
                "before running with ANNOLOOP_ENVIRONMENT=production"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def blobs(self) -> Path:
        assert self.blob_dir is not None  # filled by the validator
        return self.blob_dir

    def ensure_dirs(self) -> None:
        """Create the folders the embedded setup writes into."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        for url in (self.database_url, self.broker_url, self.result_backend):
            if "sqlite:///" in url:
                Path(url.split("sqlite:///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
