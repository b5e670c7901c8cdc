"""Request-scoped dependencies: settings, the DB session (the unit of work), the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.auth.models import Annotator
from app.auth.service import authenticate
from app.core.blobs import BlobStore
from app.core.config import Settings
from app.core.enums import Role
from app.core.errors import Forbidden, TooManyRequests, Unauthorized
from app.core.ratelimit import RateLimiter
from app.core.tasks import bind_sender


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    """One transaction per request: committed before the response is sent, else rolled back."""
    session: Session = request.app.state.session_factory()
    bind_sender(session, request.app.state.task_sender)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_blobs(request: Request) -> BlobStore:
    blobs: BlobStore = request.app.state.blobs
    return blobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit happens before the response leaves, so a 2xx means "stored".
DbSession = Annotated[Session, Depends(get_db, scope="function")]
Blobs = Annotated[BlobStore, Depends(get_blobs)]

_bearer = HTTPBearer(auto_error=False, description="An annoloop API token (`al_…`).")


def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


Limiter = Annotated[RateLimiter, Depends(get_limiter)]


def current_annotator(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    limiter: Limiter,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Annotator:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")  # not a guess: not counted
    limit = settings.rate_limit_auth_failures_per_minute
    # The client address as uvicorn sees it (behind a proxy: run it with --proxy-headers).
    key = f"auth-fail:{request.client.host if request.client else 'unknown'}"
    # Past the limit, an address gets no token checks at all until the window ends: refusing
    # only its failures would still let a correct guess through.
    if limit and limiter.count(key) >= limit:
        raise TooManyRequests(
            "too many failed token checks from this address", retry_after=limiter.retry_after()
        )
    try:
        return authenticate(db, credentials.credentials, settings.secret_key)
    except Unauthorized:
        if limit:
            limiter.hit(key)
        raise


CurrentUser = Annotated[Annotator, Depends(current_annotator)]


def require_engineer(user: CurrentUser) -> Annotator:
    if user.role not in (Role.admin, Role.engineer):
        raise Forbidden("this action needs the engineer or admin role")
    return user


def require_admin(user: CurrentUser) -> Annotator:
    if user.role is not Role.admin:
        raise Forbidden("this action needs the admin role")
    return user


Engineer = Annotated[Annotator, Depends(require_engineer)]
Admin = Annotated[Annotator, Depends(require_admin)]


def label_rate_limit(user: CurrentUser, settings: SettingsDep, limiter: Limiter) -> None:
    """Per annotator, not per token: minting more tokens must not buy more submissions."""
    limit = settings.rate_limit_labels_per_minute
    if limit and limiter.hit(f"labels:{user.id}") > limit:
        raise TooManyRequests(
            f"more than {limit} label submissions a minute", retry_after=limiter.retry_after()
        )
