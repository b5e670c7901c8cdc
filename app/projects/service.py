"""Projects and who may see them.

Admins see every project; engineers and annotators see the projects they are members of
(creating a project makes its creator a member). A project someone cannot see answers 404,
the same as one that does not exist, so ids do not leak.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.auth.models import Annotator
from app.core.enums import Role
from app.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from app.items.models import Item
from app.projects import repository
from app.projects.models import Project, ProjectMember
from app.projects.schemas import ProjectCreate, ProjectUpdate, check_strategy
from worker.ml.strategy_params import ParamsError, check_model_fits, check_params


def get_visible(db: Session, actor: Annotator, project_id: int) -> Project:
    # R-VISIBLE (the hot path: app/fastpath/sql/visible_project.sql)
    project = repository.visible(db, project_id, _member_filter(actor))
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project


def get_visible_item(db: Session, actor: Annotator, item_id: int) -> tuple[Item, Project]:
    """An item and its project, 404 unless the caller may see that project."""
    # R-VISIBLE
    item, project = repository.item_and_project(db, item_id, _member_filter(actor))
    if item is None:
        raise NotFound(f"item {item_id} not found")
    if project is None:
        raise NotFound(f"project {item.project_id} not found")
    return item, project


def _member_filter(actor: Annotator) -> int | None:
    """Admins see every project; everyone else the projects they are members of."""
    return None if actor.role is Role.admin else actor.id


def get_for_engineer(db: Session, actor: Annotator, project_id: int) -> Project:
    project = get_visible(db, actor, project_id)
    if actor.role is Role.annotator:
        raise Forbidden("this action needs the engineer or admin role")
    return project


def list_visible(db: Session, actor: Annotator) -> list[Project]:
    return repository.visible_to(db, None if actor.role is Role.admin else actor.id)


def create(db: Session, actor: Annotator, body: ProjectCreate) -> Project:
    if repository.by_name(db, body.name) is not None:
        raise Conflict(f"a project named {body.name!r} exists", code="duplicate_name")
    spec = body.model_spec.model_dump(exclude_none=True)
    spec["num_classes"] = len(body.classes)
    project = Project(
        name=body.name,
        kind=body.kind,
        classes=list(body.classes),
        model_spec=spec,
        strategy=body.strategy or "entropy",
        strategy_params=body.strategy_params or {},
        labels_per_item=body.labels_per_item or 1,
        label_budget=body.label_budget,
        batch_size=body.batch_size or 100,
        relabel_budget=body.relabel_budget,
        finetune_every=body.finetune_every,
        auto_advance=bool(body.auto_advance),
        seed=body.seed or 0,
        crossfit_folds=5 if body.crossfit_folds is None else body.crossfit_folds,
        aggregation=body.aggregation or "majority",
        honeypot_rate=body.honeypot_rate or 0.0,
        stop_when_decided=body.stop_when_decided is not False,
        confidence_target=body.confidence_target,
        created_by_id=actor.id,
    )
    check_fits(project, project.strategy)  # before anything is stored
    db.add(project)
    db.flush()
    db.add(ProjectMember(project_id=project.id, annotator_id=actor.id))
    db.flush()
    return project


# Settings where an explicit null means "off", not "leave as it is".
NULLABLE_SETTINGS = ("label_budget", "relabel_budget", "finetune_every", "confidence_target")


def update(db: Session, project: Project, body: ProjectUpdate) -> Project:
    changes = body.model_dump(exclude_unset=True)
    renamed = "name" in changes and changes["name"] != project.name
    if renamed and repository.by_name(db, changes["name"]) is not None:
        raise Conflict(f"a project named {changes['name']!r} exists", code="duplicate_name")
    if changes.get("strategy") is not None or changes.get("strategy_params") is not None:
        _check_strategy_settings(project, changes)
    for key, value in changes.items():
        if value is None and key not in NULLABLE_SETTINGS:
            continue
        setattr(project, key, value)
    db.flush()
    return project


def _check_strategy_settings(project: Project, changes: dict[str, Any]) -> None:
    """The strategy and parameters the project will have, by the worker's rule: a new
    strategy must fit the parameters kept, new parameters the strategy kept."""
    strategy = changes.get("strategy") or project.strategy
    params = changes.get("strategy_params")
    params = project.strategy_params if params is None else params
    try:
        check_strategy(project.kind, strategy)
    except ValueError as exc:
        raise Unprocessable(str(exc), code="unknown_strategy") from exc
    try:
        check_params(project.kind.value, strategy, params)
    except ParamsError as exc:
        raise Unprocessable(
            f"strategy_params: {exc}",
            code="invalid_params",
            detail={"key": exc.key, "strategy": strategy},
        ) from exc
    check_fits(project, strategy)


def check_fits(project: Project, strategy: str) -> None:
    """422 when the project's model cannot give ``strategy`` what it needs (BALD: dropout)."""
    try:
        check_model_fits(project.kind.value, strategy, project.model_spec)
    except ParamsError as exc:
        raise Unprocessable(
            str(exc), code="strategy_needs", detail={"need": exc.key, "strategy": strategy}
        ) from exc


def add_member(db: Session, actor: Annotator, project: Project, annotator_id: int) -> None:
    """Engineers add annotators; only admins add engineers and admins. Imported identities
    never sign in, so they are no members."""
    person = db.get(Annotator, annotator_id)
    if person is None:
        raise NotFound(f"annotator {annotator_id} not found")
    if person.external:
        raise Unprocessable(
            f"{person.name!r} is an imported identity and cannot sign in", code="external_identity"
        )
    if actor.role is not Role.admin and person.role is not Role.annotator:
        raise Forbidden("engineers add annotators only; an admin adds engineers and admins")
    if not repository.is_member(db, project.id, annotator_id):
        db.add(ProjectMember(project_id=project.id, annotator_id=annotator_id))
        db.flush()


def remove_member(db: Session, project: Project, annotator_id: int) -> None:
    member = db.get(ProjectMember, (project.id, annotator_id))
    if member is None:
        raise NotFound(f"annotator {annotator_id} is not a member of project {project.id}")
    db.delete(member)
    db.flush()
