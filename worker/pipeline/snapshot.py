"""Read what a cycle trains and scores on, as plain arrays, in one transaction."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Select, func, literal, select
from sqlalchemy.orm import Session

from app.annotations.derived import derive
from app.annotations.models import Annotation
from app.core.blobs import BlobStore
from app.core.enums import LabelSource, ProjectKind, QueueState, Split
from app.cycles.models import Cycle
from app.cycles.strategies import MIXED_QUEUE_STRATEGY
from app.gold import repository as gold_labels
from app.items.media import MEDIA_FLOAT32 as FEATURES_MEDIA
from app.items.models import Item, ItemFeature
from app.pretraining.models import Pretraining
from app.projects.models import Project
from app.queue.models import QueueEntry
from worker.ml.spec import PRETRAINING_BACKBONE


@dataclass(frozen=True)
class ItemRefs:
    """Parallel lists describing items in a fixed order (ascending id)."""

    ids: list[int] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    media_types: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, item_id: int, blob: str, media_type: str) -> None:
        self.ids.append(item_id)
        self.hashes.append(blob)
        self.media_types.append(media_type)


@dataclass(frozen=True)
class CycleInputs:
    cycle_id: int
    project_id: int
    number: int
    strategy: str
    params: dict[str, Any]
    seed: int
    batch_size: int
    labels_per_item: int
    model_spec: dict[str, Any]
    labels_remaining: int | None  # None = no label budget
    labelled: ItemRefs  # pool items with at least one live vote
    counts: np.ndarray  # (L, C) int64 votes of ``labelled``
    candidates: ItemRefs  # pool items with no live vote
    test: ItemRefs  # test items with gold, or else a strict majority of their votes
    test_labels: np.ndarray  # (T,) int64
    labelled_set_hash: str
    # Test items left out of evaluation: no gold and no strict majority (reported, not silent).
    test_unlabelled: int = 0
    # (L, C) what the model trains on when the project's aggregation model is not a vote
    # count (Dawid–Skene, CROWDLAB posteriors); None: each item's vote distribution.
    targets: np.ndarray | None = None
    aggregation: str = "votes"  # the method that made ``targets``
    labels_spent: int = 0  # the project's count when the inputs were read
    # (V, 3) int64 [row of ``labelled``, annotator id, class] of every live vote on a
    # labelled item without gold: who said what, for ActiveLab's mixed queue (else None).
    votes: np.ndarray | None = None
    # ``hparams.init = "pretraining"``: the pretraining checkpoint blob ``features`` start
    # from (recorded on the cycle when it was created); None: from scratch.
    init_checkpoint: str | None = None

    def training_targets(self) -> np.ndarray:
        """(L, C) float64 soft targets of ``labelled``, rows summing to 1."""
        if self.targets is not None:
            return np.asarray(self.targets, dtype=np.float64)
        counts = np.asarray(self.counts, dtype=np.float64)
        return counts / counts.sum(axis=1, keepdims=True)


def load_inputs(db: Session, cycle: Cycle, blobs: BlobStore | None = None) -> CycleInputs:
    project = db.get(Project, cycle.project_id)
    assert project is not None
    num_classes = len(project.classes)
    votes: dict[int, np.ndarray] = {}
    voters: dict[int, list[tuple[int, int]]] = {}
    keep_voters = cycle.strategy == MIXED_QUEUE_STRATEGY
    rows = db.execute(
        select(Annotation.item_id, Annotation.annotator_id, Annotation.class_index).where(
            Annotation.project_id == project.id, Annotation.retracted_at.is_(None)
        )
    )
    for item_id, annotator_id, class_index in rows:
        counts = votes.get(item_id)
        if counts is None:
            counts = votes[item_id] = np.zeros(num_classes, dtype=np.int64)
        counts[class_index] += 1
        if keep_voters:
            voters.setdefault(item_id, []).append((annotator_id, class_index))

    gold = gold_labels.of_project(db, project.id)
    labelled, candidates, test = ItemRefs(), ItemRefs(), ItemRefs()
    labelled_counts: list[np.ndarray] = []
    test_labels: list[int] = []
    test_unlabelled = 0
    vote_rows: list[tuple[int, int, int]] = []
    items = db.execute(_item_inputs(project).order_by(Item.id))
    for item_id, split, blob, media_type in items:
        counts = votes.get(item_id)
        if split is Split.test:
            if item_id in gold:
                test.append(item_id, blob, media_type)
                test_labels.append(gold[item_id])
            elif counts is not None and _has_unique_top(counts):
                test.append(item_id, blob, media_type)
                test_labels.append(int(counts.argmax()))
            else:
                test_unlabelled += 1
        elif item_id in gold:
            # Known truth trains as itself, whatever the votes on it (a honeypot's).
            labelled.append(item_id, blob, media_type)
            labelled_counts.append(np.eye(num_classes, dtype=np.int64)[gold[item_id]])
        elif counts is None:
            candidates.append(item_id, blob, media_type)
        else:
            for annotator_id, class_index in voters.get(item_id, ()):
                vote_rows.append((len(labelled), annotator_id, class_index))
            labelled.append(item_id, blob, media_type)
            labelled_counts.append(counts)

    _check_inputs(db, project, len(labelled) + len(candidates) + len(test) + test_unlabelled)
    count_matrix = (
        np.stack(labelled_counts) if labelled_counts else np.zeros((0, num_classes), np.int64)
    )
    spec = dict(project.model_spec)
    spec["num_classes"] = num_classes
    init_checkpoint = cycle.pretraining_sha256
    if (spec.get("hparams") or {}).get("backbone") == PRETRAINING_BACKBONE:
        spec["hparams"] = _with_run(db, cycle, spec["hparams"])
        init_checkpoint = None  # the run is the backbone, not a start for ``features``
    targets, used = _posterior_targets(db, project, labelled.ids, count_matrix, set(gold), blobs)
    return CycleInputs(
        cycle_id=cycle.id,
        project_id=project.id,
        number=cycle.number,
        strategy=cycle.strategy,
        params=dict(cycle.params),
        seed=cycle.seed,
        batch_size=cycle.batch_size,
        labels_per_item=project.labels_per_item,
        model_spec=spec,
        labels_remaining=_labels_remaining(db, project),
        labelled=labelled,
        counts=count_matrix,
        candidates=candidates,
        test=test,
        test_labels=np.asarray(test_labels, dtype=np.int64),
        labelled_set_hash=labelled_set_hash(labelled.ids, count_matrix),
        test_unlabelled=test_unlabelled,
        targets=targets,
        aggregation=used,
        labels_spent=project.labels_spent,
        votes=np.asarray(vote_rows, dtype=np.int64).reshape(-1, 3) if keep_voters else None,
        init_checkpoint=init_checkpoint,
    )


def _with_run(db: Session, cycle: Cycle, hparams: dict[str, Any]) -> dict[str, Any]:
    """``backbone = "pretraining"``: the run recorded on the cycle when it was created (its
    checkpoint and what it fitted), so the worker builds that encoder and no later run."""
    run = db.get(Pretraining, cycle.pretraining_id) if cycle.pretraining_id else None
    if run is None or cycle.pretraining_sha256 is None:
        raise ValueError(f"cycle {cycle.id} uses a pretraining run as its backbone but has none")
    model = run.params["model"]
    return {**hparams, "pretraining": {"sha256": cycle.pretraining_sha256, "model": model}}


def pool_refs(db: Session, project: Project) -> ItemRefs:
    """Every pool item's model input, labelled or not (what pretraining contrasts)."""
    refs = ItemRefs()
    rows = db.execute(_item_inputs(project).where(Item.split == Split.pool).order_by(Item.id))
    for item_id, _split, blob, media_type in rows:
        refs.append(item_id, blob, media_type)
    return refs


def _item_inputs(project: Project) -> Select[int, Split, str, str]:
    """(id, split, blob, media type) of each item of the project: its payload, or the feature
    vector its model takes (``model_spec.input``), which every item must have."""
    wanted = project.model_spec.get("input")
    if not wanted:
        return select(Item.id, Item.split, Item.blob_sha256, Item.media_type).where(
            Item.project_id == project.id
        )
    return (
        select(Item.id, Item.split, ItemFeature.blob_sha256, literal(FEATURES_MEDIA))
        .join(ItemFeature, (ItemFeature.item_id == Item.id) & (ItemFeature.name == wanted))
        .where(Item.project_id == project.id)
    )


def _check_inputs(db: Session, project: Project, read: int) -> None:
    """Every item must have the vector its model takes; say so rather than train on fewer."""
    total = db.scalar(select(func.count()).select_from(Item).where(Item.project_id == project.id))
    if project.model_spec.get("input") and read != total:
        raise ValueError(
            f"{int(total or 0) - read} item(s) have no feature vector "
            f"{project.model_spec['input']!r}, which the model takes"
        )


MODEL_BASED = ("dawid_skene", "crowdlab")


def _posterior_targets(
    db: Session,
    project: Project,
    item_ids: list[int],
    counts: np.ndarray,
    gold: set[int],
    blobs: BlobStore | None,
) -> tuple[np.ndarray | None, str]:
    """The aggregation model's posterior per labelled item, when it is model-based; a gold
    item keeps its gold row (``counts`` holds it one-hot). CROWDLAB reads the last cleaning
    cycle's held-out probabilities from ``blobs``; without them Dawid–Skene stands in (the
    returned method says so)."""
    if project.aggregation not in MODEL_BASED or not item_ids:
        return None, "votes"
    derived = derive(db, project, blobs, project.aggregation)
    out = counts.astype(np.float64) / counts.sum(axis=1, keepdims=True)
    for n, item_id in enumerate(item_ids):
        row = None if item_id in gold else derived.row(item_id)
        if row is not None:
            out[n] = derived.posterior[row]
    return out, derived.method_used


def labelled_set_hash(item_ids: list[int], counts: np.ndarray) -> str:
    """SHA-256 over (item id, vote counts) pairs: equal hashes = the same training targets."""
    payload = json.dumps([[i, c.tolist()] for i, c in zip(item_ids, counts, strict=True)])
    return hashlib.sha256(payload.encode()).hexdigest()


def _has_unique_top(counts: np.ndarray) -> bool:
    top = counts.max()
    return bool(top > 0 and (counts == top).sum() == 1)


def _labels_remaining(db: Session, project: Project) -> int | None:
    if project.label_budget is None:
        return None
    spent = db.scalar(
        select(func.count(Annotation.id)).where(
            Annotation.project_id == project.id,
            Annotation.source.in_([LabelSource.human, LabelSource.oracle]),
            Annotation.retracted_at.is_(None),
        )
    )
    return max(project.label_budget - int(spent or 0), 0)


@dataclass(frozen=True)
class CleaningState:
    cleaned: set[int]  # items whose relabelling finished: never picked again
    previous_checkpoint: str | None  # the last model of this project, to fine-tune from
    previous_crossfit: dict[str, Any] | None  # its fold models (``metrics["crossfit"]``)


def load_cleaning_state(db: Session, cycle: Cycle) -> CleaningState:
    entries = db.execute(
        select(QueueEntry.item_id, QueueEntry.state)
        .join(Cycle, Cycle.id == QueueEntry.cycle_id)
        .where(Cycle.project_id == cycle.project_id, Cycle.kind == ProjectKind.clean)
    ).all()
    previous = db.execute(
        select(Cycle.checkpoint_sha256, Cycle.metrics)
        .where(
            Cycle.project_id == cycle.project_id,
            Cycle.id != cycle.id,
            Cycle.checkpoint_sha256.is_not(None),
        )
        .order_by(Cycle.number.desc())
        .limit(1)
    ).first()
    crossfit = (previous.metrics or {}).get("crossfit") if previous is not None else None
    return CleaningState(
        cleaned={i for i, state in entries if state is QueueState.done},
        previous_checkpoint=previous.checkpoint_sha256 if previous is not None else None,
        previous_crossfit=crossfit if crossfit and crossfit.get("done") else None,
    )
