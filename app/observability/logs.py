"""Logging set-up shared by the API, the worker and the CLI: one handler on the root logger,
JSON (one object per line) or text, each record enriched with the request/task context.

JSON lines always hold ``time, level, logger, message, request_id, task_id``; then the bound
context (``cycle_id``, ``labelled_set_hash``, ...) and whatever the call passed in ``extra=``.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from app.observability import context
from app.observability.settings import get_observability_settings

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured duplicate of the message
    "taskName",
}


def _timestamp(record: logging.LogRecord) -> str:
    return (
        datetime.fromtimestamp(record.created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Context first, so an explicit ``extra=`` on the call wins over a bound value."""
    fields: dict[str, Any] = dict(context.current())
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None,
            "task_id": None,
        }
        payload.update(record_fields(record))
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For a terminal: the same fields, ``key=value`` after the message."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in record_fields(record).items() if v is not None)
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line = f"{line}  [{fields}]"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def make_formatter(fmt: str = "text") -> logging.Formatter:
    """Factory for ``logging.config`` (``"()"``): uvicorn applies the config in every process."""
    return JsonFormatter() if fmt == "json" else TextFormatter()


def log_config(level: str | None = None, fmt: str | None = None) -> dict[str, Any]:
    """A ``dictConfig`` for the whole process; also handed to uvicorn as ``log_config``."""
    if level is None:
        from app.core.config import get_settings

        level = get_settings().log_level
    level = level.upper()
    fmt = fmt or get_observability_settings().log_format
    # uvicorn's loggers lose their own handlers and propagate, so they get our format too.
    uvicorn = {"handlers": [], "propagate": True, "level": level}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"annoloop": {"()": f"{__name__}.make_formatter", "fmt": fmt}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "annoloop",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": uvicorn,
            "uvicorn.error": uvicorn,
            "uvicorn.access": uvicorn,
            # One INFO line per alembic plugin on every `annoloop migrate`: noise.
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Idempotent: the CLI, uvicorn and Celery may each call it in one process."""
    logging.config.dictConfig(log_config(level, fmt))
