from __future__ import annotations

from sqlalchemy import Integer, bindparam, exists, or_, select
from sqlalchemy.orm import Session

from app.items.models import Item
from app.projects.models import Project, ProjectMember


def by_name(db: Session, name: str) -> Project | None:
    return db.scalar(select(Project).where(Project.name == name))


def is_member(db: Session, project_id: int, annotator_id: int) -> bool:
    return db.get(ProjectMember, (project_id, annotator_id)) is not None


# Built once: the annotator's routes ask on every call, and building a statement (with its
# cache key) cost more than running it on SQLite. ``member``: None for admins (who see every
# project), else the caller, who must be a member.
_MEMBER = bindparam("member", type_=Integer)
_VISIBLE = or_(
    _MEMBER.is_(None),
    exists().where(ProjectMember.project_id == Project.id, ProjectMember.annotator_id == _MEMBER),
)
_PROJECT_IF_VISIBLE = select(Project).where(Project.id == bindparam("project_id"), _VISIBLE)
_ITEM_AND_PROJECT = (
    select(Item, Project, _VISIBLE.label("seen"))
    .join(Project, Project.id == Item.project_id)
    .where(Item.id == bindparam("item_id"))
)


def visible(db: Session, project_id: int, annotator_id: int | None) -> Project | None:
    """The project if it exists and is visible, in one query (every annotator call asks)."""
    return db.scalar(_PROJECT_IF_VISIBLE, {"project_id": project_id, "member": annotator_id})


def item_and_project(
    db: Session, item_id: int, annotator_id: int | None
) -> tuple[Item | None, Project | None]:
    """An item and its project when visible, in one query; ``(item, None)`` when the item
    exists in a project the caller cannot see, ``(None, None)`` when there is no such item."""
    row = db.execute(_ITEM_AND_PROJECT, {"item_id": item_id, "member": annotator_id}).first()
    if row is None:
        return None, None
    item, project, seen = row
    return item, (project if seen else None)


def visible_to(db: Session, annotator_id: int | None) -> list[Project]:
    """All projects when ``annotator_id`` is None (admins), else the member's projects."""
    stmt = select(Project).order_by(Project.id)
    if annotator_id is not None:
        stmt = stmt.join(ProjectMember, ProjectMember.project_id == Project.id).where(
            ProjectMember.annotator_id == annotator_id
        )
    return list(db.scalars(stmt))


def member_ids(db: Session, project_id: int) -> list[int]:
    stmt = select(ProjectMember.annotator_id).where(ProjectMember.project_id == project_id)
    return list(db.scalars(stmt.order_by(ProjectMember.annotator_id)))
