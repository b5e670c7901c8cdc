"""The API process's own metrics, and ``record_label`` for stored labels.

These live in prometheus_client's default registry (one per process). With several API
processes behind one address each scrape sees one process's counters: the scrape-time
gauges in ``db_metrics`` read the database instead and are right whichever process answers.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Enum, Histogram

log = logging.getLogger("annoloop.labels")

# Latency of API calls: browser round trips are 5-200 ms; bulk uploads and imports take seconds.
REQUEST_SECONDS = Histogram(
    "annoloop_http_request_duration_seconds",
    "HTTP request latency by route template, method and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

LABELS = Counter(
    "annoloop_labels",
    "Labels stored (committed) by this API process, by project and source.",
    ["project", "source"],
)

# Postgres's hot path (``app.fastpath.check``): ``on`` when the database holds its functions as
# this code defines them; ``fallback`` when they differ and the ORM serves (run `annoloop
# migrate`); ``unchecked`` until the database could be asked; ``off`` without a hot path.
HOT_PATH = Enum(
    "annoloop_hot_path",
    "Which path serves next and submit: on (database functions), fallback (the ORM: the "
    "functions differ from the code), unchecked, off (no hot path: SQLite or turned off).",
    states=["off", "unchecked", "on", "fallback"],
)


def record_label(
    project_id: int,
    source: str,
    *,
    annotation_id: int | None = None,
    item_id: int | None = None,
    annotator_id: int | None = None,
    cycle_id: int | None = None,
    idempotency_key: str | None = None,
) -> None:
    """Count one committed label and write the log line that ties it to its request.

    The request id comes from the log context; with ``annotation_id`` and the client's
    ``idempotency_key`` it is the first link of "Tracing a label" in docs/deploy.md.
    """
    LABELS.labels(project=str(project_id), source=str(source)).inc()
    log.info(
        "label stored",
        extra={
            "project_id": project_id,
            "annotation_id": annotation_id,
            "item_id": item_id,
            "annotator_id": annotator_id,
            "cycle_id": cycle_id,
            "source": str(source),
            "idempotency_key": idempotency_key,
        },
    )


def record_labels_imported(project_id: int, source: str, count: int) -> None:
    """Bulk imports: one counter step and one log line per project, not one per row."""
    if count <= 0:
        return
    LABELS.labels(project=str(project_id), source=str(source)).inc(count)
    log.info(
        "labels imported",
        extra={"project_id": project_id, "source": str(source), "count": count},
    )
