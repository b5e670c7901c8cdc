"""A typed client for the annoloop API over httpx, synchronous (``Client``) and asynchronous
(``AsyncClient``) with the same calls. Needs httpx only; numpy for array uploads, pandas for
DataFrames, tqdm for nicer progress bars (a plain one otherwise)."""

from annoloop.client._async_client import AsyncClient
from annoloop.client._sync_client import Client
from annoloop.client.errors import (
    AnnoloopError,
    ApiError,
    BadRequest,
    Conflict,
    CycleEnded,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    WaitTimeout,
)
from annoloop.client.retry import RetryPolicy

__all__ = [
    "AnnoloopError",
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "CycleEnded",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "WaitTimeout",
]
