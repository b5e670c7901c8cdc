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
from app.core.errors import Forbidden, Unauthorized
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


def current_annotator(
    db: DbSession,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Annotator:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")
    return authenticate(db, credentials.credentials, settings.secret_key)


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
