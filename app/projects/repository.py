from __future__ import annotations

from sqlalchemy import ColumnElement, exists, select, true
from sqlalchemy.orm import Session

from app.items.models import Item
from app.projects.models import Project, ProjectMember


def by_name(db: Session, name: str) -> Project | None:
    return db.scalar(select(Project).where(Project.name == name))


def is_member(db: Session, project_id: int, annotator_id: int) -> bool:
    return db.get(ProjectMember, (project_id, annotator_id)) is not None


def _visible(annotator_id: int | None) -> ColumnElement[bool]:
    """Whether the project row is visible: to everyone (``None``, admins) or to members."""
    if annotator_id is None:
        return true()
    return exists().where(
        ProjectMember.project_id == Project.id, ProjectMember.annotator_id == annotator_id
    )


def visible(db: Session, project_id: int, annotator_id: int | None) -> Project | None:
    """The project if it exists and is visible, in one query (every annotator call asks)."""
    return db.scalar(select(Project).where(Project.id == project_id, _visible(annotator_id)))


def item_and_project(
    db: Session, item_id: int, annotator_id: int | None
) -> tuple[Item | None, Project | None]:
    """An item and its project when visible, in one query; ``(item, None)`` when the item
    exists in a project the caller cannot see, ``(None, None)`` when there is no such item."""
    row = db.execute(
        select(Item, Project, _visible(annotator_id))
        .join(Project, Project.id == Item.project_id)
        .where(Item.id == item_id)
    ).first()
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
