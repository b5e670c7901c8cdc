"""``annoloop up --demo``: a ready-to-label MNIST project built from data shipped in the package.

Rerunning it reuses the project (no duplicate items or labels) and issues fresh tokens.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.annotations.schemas import ImportRow
from app.annotations.service import import_rows
from app.auth import repository as annotators
from app.auth.models import Annotator
from app.auth.service import create_annotator, issue_token
from app.core.blobs import open_blob_store
from app.core.config import Settings
from app.core.db import unit_of_work
from app.core.enums import Role, Split
from app.core.tasks import TaskSender, bind_sender
from app.cycles import repository as cycles
from app.cycles.schemas import CycleCreate
from app.cycles.service import start
from app.items.bulk import prepare_npz
from app.items.media import MediaLimits
from app.items.service import add_items
from app.projects import repository as projects
from app.projects.schemas import ModelSpecIn, ProjectCreate
from app.projects.service import add_member, create

PROJECT_NAME = "MNIST demo"
N_TEST = 400
SEED_LABELS_PER_CLASS = 2


@dataclass(frozen=True)
class Demo:
    project_id: int
    admin_token: str
    annotator_token: str
    cycle_number: int | None


def _account(db: Session, name: str, role: Role, secret: str) -> tuple[Annotator, str]:
    person = annotators.annotator_by_name(db, name) or create_annotator(
        db, actor=None, name=name, role=role
    )
    token, _ = issue_token(db, person, secret, label="annoloop up --demo")
    return person, token


def load_demo_arrays() -> tuple[np.ndarray, np.ndarray]:
    with resources.files("app.demo").joinpath("mnist_demo.npz").open("rb") as fh:
        data = np.load(fh)
        return data["images"], data["labels"]


def create_demo(factory: sessionmaker[Session], settings: Settings, sender: TaskSender) -> Demo:
    images, labels = load_demo_arrays()
    with unit_of_work(factory) as db:
        bind_sender(db, sender)
        admin, admin_token = _account(db, "admin", Role.admin, settings.secret_key)
        person, annotator_token = _account(
            db, "demo-annotator", Role.annotator, settings.secret_key
        )
        project = projects.by_name(db, PROJECT_NAME)
        if project is None:
            project = create(
                db,
                admin,
                ProjectCreate(
                    name=PROJECT_NAME,
                    classes=[str(d) for d in range(10)],
                    model_spec=ModelSpecIn(
                        name="small_cnn",
                        input_shape=[1, 28, 28],
                        hparams={"epochs": 30, "batch_size": 32, "lr": 1e-3},
                    ),
                    strategy="entropy",
                    batch_size=50,
                    label_budget=600,
                ),
            )
            _add_items_and_seed_labels(db, settings, project.id, images, labels)
        add_member(db, admin, project, person.id)
        cycle = cycles.active(db, project.id)
        if cycle is None and not cycles.for_project(db, project.id):
            cycle = start(db, admin, project, CycleCreate())
        number = cycle.number if cycle else None
        project_id = project.id
    return Demo(project_id, admin_token, annotator_token, number)


def _add_items_and_seed_labels(
    db: Session, settings: Settings, project_id: int, images: np.ndarray, labels: np.ndarray
) -> None:
    from app.projects.models import Project

    project = db.get(Project, project_id)
    assert project is not None
    n = len(images)
    split = np.array(["pool"] * (n - N_TEST) + ["test"] * N_TEST)
    ids = np.array([f"mnist-{i:05d}" for i in range(n)])
    buf = io.BytesIO()
    np.savez(buf, images=images, external_ids=ids, split=split)
    buf.seek(0)
    prepared = prepare_npz(buf, limits=MediaLimits(max_pixels=settings.max_pixels))
    add_items(db, open_blob_store(settings), project, prepared, Split.pool)

    seed: list[int] = []
    for digit in range(10):
        pool_of_digit = np.flatnonzero(labels[: n - N_TEST] == digit)
        seed.extend(pool_of_digit[:SEED_LABELS_PER_CLASS].tolist())
    rows = [
        ImportRow(external_id=str(ids[i]), annotator="demo-seed", class_index=int(labels[i]))
        for i in seed
    ] + [
        ImportRow(external_id=str(ids[i]), annotator="ground-truth", class_index=int(labels[i]))
        for i in range(n - N_TEST, n)
    ]
    import_rows(db, project, rows)


__all__ = ["Demo", "create_demo"]
