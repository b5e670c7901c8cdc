from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.projects.models import Project, ProjectMember


def by_name(db: Session, name: str) -> Project | None:
    return db.scalar(select(Project).where(Project.name == name))


def is_member(db: Session, project_id: int, annotator_id: int) -> bool:
    return db.get(ProjectMember, (project_id, annotator_id)) is not None


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
