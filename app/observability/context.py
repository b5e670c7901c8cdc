"""Fields that every log line of the current request or task carries (request_id, task_id, ...).

Context variables, so they follow the request through FastAPI's thread pool (anyio copies the
context into the worker thread) and stay apart between concurrent requests.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_fields: ContextVar[Mapping[str, Any]] = ContextVar("annoloop_log_context", default=_EMPTY)


def current() -> Mapping[str, Any]:
    return _fields.get()


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add fields to the current context; returns a token for ``unbind``."""
    return _fields.set({**_fields.get(), **fields})


def unbind(token: Token[Mapping[str, Any]]) -> None:
    _fields.reset(token)


def clear() -> None:
    """Forget everything: a Celery pool process runs one task after another in one context."""
    _fields.set(_EMPTY)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)
