from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session

from app.auth.models import Annotator, ApiToken
from app.core.enums import Role
from app.projects.models import ProjectMember


class TokenOwner(NamedTuple):
    annotator: Annotator
    revoked_at: datetime | None
    expires_at: datetime | None


# Every request authenticates: one query for the token and its owner, and a statement built
# once (building it, with its cache key, cost more than running it on SQLite).
_TOKEN_OWNER = (
    select(Annotator, ApiToken.revoked_at, ApiToken.expires_at)
    .join(ApiToken, ApiToken.annotator_id == Annotator.id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def token_owner(db: Session, token_hash: str) -> TokenOwner | None:
    row = db.execute(_TOKEN_OWNER, {"token_hash": token_hash}).first()
    return None if row is None else TokenOwner(*row)


def annotator_by_name(db: Session, name: str) -> Annotator | None:
    return db.scalar(select(Annotator).where(Annotator.name == name))


def list_annotators(db: Session, ids: list[int] | None = None) -> list[Annotator]:
    stmt = select(Annotator).order_by(Annotator.id)
    if ids is not None:
        stmt = stmt.where(Annotator.id.in_(ids))
    return list(db.scalars(stmt))


def visible_to_engineer(db: Session, engineer_id: int) -> list[Annotator]:
    """What an engineer may see: themselves, the annotators they can add to a project (role
    annotator, signing in), and everyone in a project they are a member of."""
    their_projects = select(ProjectMember.project_id).where(
        ProjectMember.annotator_id == engineer_id
    )
    shares = exists().where(
        ProjectMember.annotator_id == Annotator.id,
        ProjectMember.project_id.in_(their_projects),
    )
    assignable = (Annotator.role == Role.annotator) & Annotator.external.is_(False)
    stmt = select(Annotator).where((Annotator.id == engineer_id) | assignable | shares)
    return list(db.scalars(stmt.order_by(Annotator.id)))
