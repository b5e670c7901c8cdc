"""Settings: one class, read from ``ANNOLOOP_*`` environment variables (and ``.env``).

The defaults are the embedded setup — a SQLite file, a SQLite-backed Kombu broker and a blob
folder, all under ``data_dir`` — so ``annoloop up`` works on a laptop with nothing else
installed. Production sets ``ANNOLOOP_DATABASE_URL=postgresql+psycopg://…`` and
``ANNOLOOP_BROKER_URL=redis://…``, and with workers on other hosts
``ANNOLOOP_BLOB_URL=s3://…``.
"""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "annoloop-development-secret-change-me"


# Production secrets: `openssl rand -hex 32` gives 64 characters of 16 kinds. A short or
# repetitive key ("", "x", "x" * 40) lets anyone who reads a token hash forge its token offline.
MIN_SECRET_LENGTH = 32
MIN_SECRET_KINDS = 10


def _check_production_secret(secret: str) -> None:
    if secret == DEFAULT_SECRET:
        raise ValueError(
            "ANNOLOOP_SECRET_KEY is the development default; set a long random secret "
            "(openssl rand -hex 32) before running with ANNOLOOP_ENVIRONMENT=production"
        )
    if len(secret) < MIN_SECRET_LENGTH or len(set(secret)) < MIN_SECRET_KINDS:
        raise ValueError(
            f"ANNOLOOP_SECRET_KEY is too weak for production: use at least "
            f"{MIN_SECRET_LENGTH} random characters of {MIN_SECRET_KINDS} kinds or more "
            "(openssl rand -hex 32)"
        )


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
    blob_dir: Path | None = Field(
        None,
        description="The blob folder (payloads, checkpoints, scores) when ANNOLOOP_BLOB_URL is "
        "empty, and what `annoloop blobs migrate` copies from; default data_dir/blobs.",
    )
    blob_url: str = Field(
        "",
        description="Where blobs live: empty = the folder ANNOLOOP_BLOB_DIR; "
        "`s3://bucket/prefix` = S3-compatible object storage that workers on any host reach "
        "(credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or any standard AWS source; "
        "`?endpoint_url=…&region=…` may follow instead of the two settings below).",
    )
    s3_endpoint_url: str = Field(
        "", description="S3 API address, e.g. `http://minio:9000`; empty = AWS S3."
    )
    s3_region: str = Field(
        "", description="S3 region; empty = AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."
    )
    blob_cache_dir: Path | None = Field(
        None,
        description="Workers keep a local copy of the S3 blobs they read (training reads each "
        "item every epoch); default data_dir/blob-cache.",
    )
    blob_cache_bytes: int = Field(
        10 * 1024**3, ge=0, description="Size cap of that copy, oldest out first; 0 = no copy."
    )
    tensor_cache_dir: Path | None = Field(
        None,
        description="Workers decode each item once into memory-mapped row files here, shared "
        "by training, evaluation and scoring and reused by later cycles; default "
        "data_dir/tensor-cache.",
    )
    tensor_cache_bytes: int = Field(
        8 * 1024**3,
        ge=0,
        description="Size cap of the tensor cache, least recently used out first; 0 = no "
        "cache (every read decodes its item again).",
    )
    backbones: str = Field(
        "",
        description="Pretrained backbones projects may use (model `pretrained`), as JSON: "
        '`{"NAME": {"arch": "resnet18", "weights": "/models/r18.pth or https://…", '
        '"sha256": "…"}}`. arch: resnet18/34/50, mobilenet_v3_small/large, efficientnet_b0; '
        "weights: a torch state dict of that architecture, checked against sha256 when a "
        "project is configured and when a worker first copies it.",
    )
    backbone_cache_dir: Path | None = Field(
        None,
        description="Each worker's copy of the backbone weights files, by digest; default "
        "data_dir/backbones.",
    )
    secret_key: str = Field(DEFAULT_SECRET, description="HMAC key for token hashes.")

    lease_seconds: int = Field(600, ge=10, description="How long an annotator holds an item.")
    progress_stats_max_age_s: float = Field(
        5.0,
        ge=0,
        description="/progress: how old a large project's per-person statistics may be before "
        "a background thread recomputes them (0 = always in the request). Projects whose "
        "statistics take under 0.25 s are always computed fresh.",
    )
    max_upload_bytes: int = Field(10 * 1024**2, ge=1024, description="One image upload.")
    max_bulk_bytes: int = Field(512 * 1024**2, ge=1024, description="One bulk archive.")
    max_bulk_uncompressed_bytes: int = Field(
        512 * 1024**2,
        ge=1024,
        description="What one bulk archive may expand to. An npz is held in memory "
        "uncompressed while it is imported, so this bounds an upload's memory: the API "
        "process peaks at about this plus 150 MB (docs/reliability.md, issue 15).",
    )
    max_bulk_items: int = Field(
        100_000,
        ge=1,
        description="Items one bulk upload may create (npz rows, zip images). Bounds its "
        "work: one transaction, holding SQLite's write lock, takes about 10 s per 100,000.",
    )
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
        description="Failed token checks per client address per minute; past it that "
        "address's failures answer 429 (slows token guessing), while a valid token from the "
        "same address still passes; 0 = no limit.",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or CIDRs of the reverse proxies in front of the "
        "API, e.g. `10.0.0.0/8,127.0.0.1`: only from these is `X-Forwarded-For` believed for "
        "the client address; empty = believe no forwarded header.",
    )
    reconcile_interval_s: float = Field(
        15.0,
        ge=0,
        description="Seconds between the API's sweeps that re-send lost cycle tasks (advance, "
        "refresh, run), e.g. after a broker outage; 0 = no sweep.",
    )
    webhook_interval_s: float = Field(
        2.0,
        ge=0,
        description="Seconds between the API's sweeps that deliver due webhook events "
        "(app/webhooks); 0 = no delivery from this process.",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Production: let webhooks call private, loopback or link-local "
        "addresses (refused otherwise, when subscribing and before each delivery).",
    )
    webhook_max_attempts: int = Field(12, ge=1, le=100, description="Tries per delivery.")
    webhook_backoff_s: float = Field(
        5.0, gt=0, description="Wait after a failed delivery, doubled after each failure."
    )
    webhook_backoff_max_s: float = Field(3600.0, gt=0, description="Longest wait between tries.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="One delivery's HTTP timeout.")
    reconcile_grace_s: float = Field(
        60.0,
        ge=0,
        description="How long a state a lost task would have changed (a fully labelled "
        "batch, a cycle not yet claimed, a re-rank that is due) must last before a sweep "
        "re-sends its task, and the least time between two re-sends of one task.",
    )
    max_in_flight: int = Field(
        4,
        ge=1,
        le=1000,
        description="Requests one API process works on at once; the rest wait without holding "
        "a thread, connection or lock (docs/reliability.md). /healthz and /metrics are exempt.",
    )
    send_timeout_s: float = Field(
        30.0,
        ge=0,
        description="Drop a client connection whose response has not moved for this many "
        "seconds (a client that stopped reading): its buffered bytes are freed. Only "
        "`annoloop api`/`up` apply it (uvicorn protocol `app.core.send_timeout`); 0 = never.",
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
    cycle_slice_s: float = Field(
        60.0,
        ge=0,
        description="Seconds a cycle trains before, between epochs, it gives its worker to "
        "another project's cycle that waits for one, and carries on later where it stopped "
        "(same weights as without the pause); 0 = never.",
    )
    cycle_turn_wait_s: float = Field(
        5.0,
        ge=0,
        description="Seconds another project's cycle must have waited for a worker before a "
        "training cycle past its slice pauses for it (a cycle just created may be about to "
        "start on an idle worker).",
    )
    cycle_time_limit_s: int = Field(
        6 * 3600,
        ge=1,
        description="Seconds a cycle may train and score (from its start, shards and fold "
        "models included) before it fails with an error saying so; checked between batches, "
        "like cancelling.",
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
        if self.blob_cache_dir is None:
            self.blob_cache_dir = data / "blob-cache"
        if self.tensor_cache_dir is None:
            self.tensor_cache_dir = data / "tensor-cache"
        if self.backbone_cache_dir is None:
            self.backbone_cache_dir = data / "backbones"
        self.backbone_sources  # noqa: B018  (parses ANNOLOOP_BACKBONES: refused at start-up)
        scheme = urlsplit(self.blob_url).scheme
        if self.blob_url and (scheme != "s3" or not urlsplit(self.blob_url).netloc):
            raise ValueError(
                f"ANNOLOOP_BLOB_URL={self.blob_url!r}: use s3://bucket/prefix, or leave it "
                "empty for the folder ANNOLOOP_BLOB_DIR"
            )
        for proxy in self.trusted_proxy_list:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"ANNOLOOP_TRUSTED_PROXIES: {proxy!r} is no address or CIDR"
                ) from exc
        if self.environment == "production":
            _check_production_secret(self.secret_key)
        return self

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def blobs(self) -> Path:
        assert self.blob_dir is not None  # filled by the validator
        return self.blob_dir

    @property
    def blob_cache(self) -> Path:
        assert self.blob_cache_dir is not None  # filled by the validator
        return self.blob_cache_dir

    @property
    def backbone_sources(self) -> dict[str, dict[str, str]]:
        """``backbones`` parsed: name -> {"arch", "weights", "sha256"}."""
        if not self.backbones.strip():
            return {}
        try:
            raw = json.loads(self.backbones)
        except ValueError as exc:
            raise ValueError(f"ANNOLOOP_BACKBONES is not JSON: {exc}") from exc
        keys = {"arch", "weights", "sha256"}
        if not isinstance(raw, dict) or not all(
            isinstance(v, dict) and set(v) == keys and all(isinstance(x, str) for x in v.values())
            for v in raw.values()
        ):
            raise ValueError(
                'ANNOLOOP_BACKBONES must map names to {"arch", "weights", "sha256"} strings'
            )
        if "pretraining" in raw:  # model_spec.hparams.backbone = "pretraining": the project's run
            raise ValueError('ANNOLOOP_BACKBONES: the name "pretraining" is reserved')
        for name, v in raw.items():
            if len(v["sha256"]) != 64 or not set(v["sha256"]) <= set("0123456789abcdef"):
                raise ValueError(f"ANNOLOOP_BACKBONES[{name!r}].sha256 is not a sha256 hex digest")
        return {str(k): dict(v) for k, v in raw.items()}

    @property
    def backbone_cache(self) -> Path:
        assert self.backbone_cache_dir is not None  # filled by the validator
        return self.backbone_cache_dir

    @property
    def tensor_cache(self) -> Path:
        assert self.tensor_cache_dir is not None  # filled by the validator
        return self.tensor_cache_dir

    def ensure_dirs(self) -> None:
        """Create the folders the embedded setup writes into."""
        if not self.blob_url:
            self.blobs.mkdir(parents=True, exist_ok=True)
        for url in (self.database_url, self.broker_url, self.result_backend):
            if "sqlite:///" in url:
                Path(url.split("sqlite:///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
