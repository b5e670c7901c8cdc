from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from app.auth.models import Annotator, ApiToken


def token_by_hash(db: Session, token_hash: str) -> ApiToken | None:
    # Every request authenticates: one query for the token and its owner, not two.
    stmt = select(ApiToken).options(joinedload(ApiToken.annotator))
    return db.scalar(stmt.where(ApiToken.token_hash == token_hash))


def annotator_by_name(db: Session, name: str) -> Annotator | None:
    return db.scalar(select(Annotator).where(Annotator.name == name))


def list_annotators(db: Session, ids: list[int] | None = None) -> list[Annotator]:
    stmt = select(Annotator).order_by(Annotator.id)
    if ids is not None:
        stmt = stmt.where(Annotator.id.in_(ids))
    return list(db.scalars(stmt))
