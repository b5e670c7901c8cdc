"""Annotators (people, including engineers and admins) and their bearer tokens."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.auth import repository
from app.auth.models import Annotator, ApiToken
from app.auth.schemas import NAME_PATTERN
from app.core.db import utcnow
from app.core.enums import Role
from app.core.errors import Conflict, Forbidden, NotFound, Unauthorized, Unprocessable
from app.core.security import hash_token, new_token


def authenticate(db: Session, token: str, secret: str) -> Annotator:
    # R-TOKEN (the hot path: app/fastpath/sql/caller.sql)
    record = repository.token_owner(db, hash_token(token, secret))
    if record is None or record.revoked_at is not None:
        raise Unauthorized("unknown or revoked token")
    if record.expires_at is not None and record.expires_at <= utcnow():
        raise Unauthorized("token expired")
    if not record.annotator.active:
        raise Unauthorized("account disabled")
    return record.annotator


def create_annotator(db: Session, *, actor: Annotator | None, name: str, role: Role) -> Annotator:
    """Admins create anyone; engineers create annotators only. ``actor=None`` is the CLI."""
    if actor is not None and actor.role is not Role.admin and role is not Role.annotator:
        raise Forbidden("engineers can create annotator accounts only")
    if repository.annotator_by_name(db, name) is not None:
        raise Conflict(f"an annotator named {name!r} already exists", code="duplicate_name")
    annotator = Annotator(name=name, role=role)
    db.add(annotator)
    db.flush()
    return annotator


def get_or_create_importer(db: Session, name: str) -> Annotator:
    """The external identity imported labels name (a crowd worker; it holds no token). A name
    that belongs to an account that signs in is refused: an import must not put votes in the
    mouth of the admin or of another project's annotator."""
    existing = repository.annotator_by_name(db, name)
    if existing is not None:
        if not existing.external:
            raise Unprocessable(
                f"annotator {name!r} is an account that signs in; imported labels name crowd "
                "identities of their own (use another name)",
                code="import_name_taken",
            )
        return existing
    if not NAME_PATTERN.fullmatch(name):
        raise Unprocessable(
            f"annotator name {name!r}: letters, digits, . @ + - _ and single spaces only",
            code="bad_annotator_name",
        )
    annotator = Annotator(name=name, role=Role.annotator, external=True)
    db.add(annotator)
    db.flush()
    return annotator


def issue_token(
    db: Session, annotator: Annotator, secret: str, label: str | None = None
) -> tuple[str, ApiToken]:
    """Return a new token and its row; only the HMAC is stored, so this is its one showing."""
    if annotator.external:
        raise Conflict(
            f"{annotator.name!r} is an imported identity and cannot sign in",
            code="external_identity",
        )
    token = new_token()
    record = ApiToken(
        annotator_id=annotator.id,
        token_hash=hash_token(token, secret),
        prefix=token[:10],
        label=label,
    )
    db.add(record)
    db.flush()
    return token, record


def get_annotator(db: Session, annotator_id: int) -> Annotator:
    annotator = db.get(Annotator, annotator_id)
    if annotator is None:
        raise NotFound(f"annotator {annotator_id} not found")
    return annotator


def revoke_token(db: Session, actor: Annotator, token_id: int) -> ApiToken:
    token = db.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"token {token_id} not found")
    if actor.role is not Role.admin and token.annotator_id != actor.id:
        raise Forbidden("you can only revoke your own tokens")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token
