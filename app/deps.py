"""Request-scoped dependencies: settings, the DB session (the unit of work), the caller."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.auth.models import Annotator
from app.auth.service import authenticate
from app.core.blobs import BlobStore
from app.core.client_address import client_address
from app.core.config import Settings
from app.core.db import serialises_writers, transaction
from app.core.enums import Role
from app.core.errors import Forbidden, TooManyRequests, Unauthorized
from app.core.ratelimit import RateLimiter, auth_failure_key, refuse_past_limit
from app.core.tasks import bind_sender

T = TypeVar("T")

# Dependencies that do no I/O are ``async def``: FastAPI runs a sync dependency on the thread
# pool, and every such hop costs a thread switch and GIL hand-offs on each request.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed before the response is sent, else rolled back.

    The session is made in the event loop (it opens no connection until first used); the
    commit or rollback, which do I/O, run in one thread hop, shielded so that a cancelled
    request still gives its connection back.
    """
    session: Session = request.app.state.session_factory()
    bind_sender(session, request.app.state.task_sender)
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_abort, session)
        raise
    if not session.in_transaction():
        # Nothing was read or written, or it was committed already: closing a session
        # without a transaction does no I/O, so no thread hop.
        session.close()
        return
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(_finish, session)


def _finish(session: Session) -> None:
    with transaction(session):
        pass


def _abort(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


async def in_own_session(request: Request, work: Callable[..., T], *args: Any) -> T:
    """``work(db, *args)`` in one thread hop and one transaction, committed before it returns.

    For the annotator's hot routes when they run through the ORM (SQLite; an app given its
    own session factory): authentication, the work and the commit in one hop. With the
    commit in ``get_db``'s exit instead, it ran in a second hop after a trip through the
    event loop, and until then the transaction held what other requests wait for (the
    database write lock on SQLite, the project row on Postgres): under load that trip, not
    the SQL, was most of the time those locks were held. A 2xx still means "stored".
    """
    factory = request.app.state.session_factory
    sender = request.app.state.task_sender

    def run() -> T:
        with transaction(factory()) as session:
            bind_sender(session, sender)
            return work(session, *args)

    if request.app.state.engine.dialect.name == "sqlite":
        # The request's context (its id, bound to every log line) goes along, as
        # anyio.to_thread does; run_in_executor alone would drop it.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(_SQLITE_WRITER, context.run, run)
    return await anyio.to_thread.run_sync(run)


# SQLite has one write lock and every transaction takes it (BEGIN IMMEDIATE). This process's
# hot requests take turns on one thread: the next starts the moment the last commits, where
# threads left to SQLite poll through the busy timeout, sleeping up to 100 ms between tries.
_SQLITE_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")


async def get_blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit happens before the response leaves, so a 2xx means "stored".
DbSession = Annotated[Session, Depends(get_db, scope="function")]
Blobs = Annotated[BlobStore, Depends(get_blobs)]

_bearer = HTTPBearer(auto_error=False, description="An annoloop API token (`al_…`).")


async def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


Limiter = Annotated[RateLimiter, Depends(get_limiter)]


@dataclass(frozen=True)
class BearerToken:
    """What authenticating a request needs, gathered in the event loop (no I/O)."""

    token: str
    client: str  # the address failed token checks are counted against
    settings: Settings
    limiter: RateLimiter


async def bearer_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> BearerToken:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")  # not a guess: not counted
    # Read from app.state here rather than through more dependencies: every request
    # authenticates, and each dependency FastAPI solves costs time on the event loop.
    state = request.app.state
    client = client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        state.settings.trusted_proxy_list,
    )
    return BearerToken(credentials.credentials, client, state.settings, state.rate_limiter)


Bearer = Annotated[BearerToken, Depends(bearer_token)]


def authenticate_request(db: Session, bearer: BearerToken) -> Annotator:
    """The caller, or 401/429. Sync (a query, maybe a Redis call): the annotator's hot routes
    call it themselves, so that the whole request is one thread hop, not two."""
    try:
        return authenticate(db, bearer.token, bearer.settings.secret_key)
    except Unauthorized:
        limit = bearer.settings.rate_limit_auth_failures_per_minute
        if limit:
            failures = bearer.limiter.hit(auth_failure_key(bearer.client))
            refuse_past_limit(failures, limit, bearer.limiter.retry_after)
        raise


def current_annotator(db: DbSession, bearer: Bearer) -> Annotator:
    annotator = authenticate_request(db, bearer)
    if serialises_writers(db):
        # SQLite: every transaction takes the one write lock (BEGIN IMMEDIATE). End this
        # read now, in its own thread hop, so the lock is not held while the request waits
        # for the route's hop; the route's work then runs in a transaction of its own.
        db.commit()
    return annotator


CurrentUser = Annotated[Annotator, Depends(current_annotator)]


async def require_engineer(user: CurrentUser) -> Annotator:
    if user.role not in (Role.admin, Role.engineer):
        raise Forbidden("this action needs the engineer or admin role")
    return user


async def require_admin(user: CurrentUser) -> Annotator:
    if user.role is not Role.admin:
        raise Forbidden("this action needs the admin role")
    return user


Engineer = Annotated[Annotator, Depends(require_engineer)]
Admin = Annotated[Annotator, Depends(require_admin)]


def limit_label_rate(bearer: BearerToken, annotator: Annotator) -> None:
    """429 past the label submissions allowed a minute. Per annotator, not per token:
    minting more tokens must not buy more submissions."""
    limit = bearer.settings.rate_limit_labels_per_minute
    if limit and bearer.limiter.hit(f"labels:{annotator.id}") > limit:
        raise TooManyRequests(
            f"more than {limit} label submissions a minute",
            retry_after=bearer.limiter.retry_after(),
        )
