"""Items' labels as the project's aggregation model derives them from the live votes.

Votes are facts and never rewritten; a label is recomputed from them whenever it is read, by
``project.aggregation`` (``app.annotations.aggregation``), so changing the method re-derives
every label. Model-aware methods read the held-out class probabilities the last cleaning cycle
stored with its scores (``worker/pipeline/crossfit.py``); without them ``crowdlab`` falls back
to ``dawid_skene`` and ``majority_tiebreak`` breaks ties by a draw seeded with the project's
seed, and ``method_used`` says so.

One derivation reads every live vote of the project, so the last few are kept per process,
keyed by what they depend on (method, newest vote id, live vote count, probabilities blob).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.annotations.aggregation import aggregate
from app.annotations.confidence import mean_vote_accuracy
from app.annotations.models import Annotation
from app.core.blobs import BlobStore
from app.core.enums import ProjectKind
from app.cycles.models import Cycle
from app.projects.models import Project

_CACHE: OrderedDict[tuple[Any, ...], DerivedLabels] = OrderedDict()
_CACHE_SIZE = 8
_LOCK = Lock()


@dataclass(frozen=True)
class DerivedLabels:
    method: str  # the project's method
    method_used: str  # what ran (crowdlab without model probabilities: dawid_skene)
    item_ids: list[int]  # items with at least one live vote, ascending id
    label: np.ndarray  # (L,) int64, -1 = no label (a tie under majority)
    posterior: np.ndarray  # (L, C) float64
    tied: np.ndarray  # (L,) bool: the vote counts have no strict majority
    annotator_ids: list[int]  # (A,) annotators with a live vote, ascending id
    annotator_accuracy: np.ndarray | None  # (A,) the method's estimate, where it has one

    def row(self, item_id: int) -> int | None:
        i = int(np.searchsorted(np.asarray(self.item_ids, dtype=np.int64), item_id))
        return i if i < len(self.item_ids) and self.item_ids[i] == item_id else None

    def describe(self, item_id: int, classes: list[str]) -> dict[str, Any] | None:
        """The item's derived label as the API shows it, or None without votes."""
        i = self.row(item_id)
        if i is None:
            return None
        k = int(self.label[i])
        return {
            "method": self.method_used,
            "class_index": k if k >= 0 else None,
            "label": classes[k] if k >= 0 else None,
            "posterior": [round(float(p), 6) for p in self.posterior[i]],
            "tied": bool(self.tied[i]),
        }


def derive(
    db: Session, project: Project, blobs: BlobStore | None, method: str | None = None
) -> DerivedLabels:
    method = method or project.aggregation
    newest, live = db.execute(
        select(func.max(Annotation.id), func.count(Annotation.id)).where(
            Annotation.project_id == project.id, Annotation.retracted_at.is_(None)
        )
    ).one()
    probs_blob = _held_out_blob(db, project) if method in MODEL_AWARE and blobs else None
    # created_at: ids come back after a rollback (tests, SQLite), a creation time does not.
    key = (project.id, project.created_at, method, project.seed, newest, live, probs_blob)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    derived = _compute(db, project, method, blobs if probs_blob else None, probs_blob)
    with _LOCK:
        _CACHE[key] = derived
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return derived


MODEL_AWARE = ("majority_tiebreak", "crowdlab")


def vote_accuracy(db: Session, project: Project) -> float:
    """How often a vote of this project is right, as Dawid–Skene estimates it (annotators'
    accuracies weighted by their votes); NaN until some item has two votes, without which
    the annotators' accuracies cannot be told from the class priors."""
    live = (Annotation.project_id == project.id, Annotation.retracted_at.is_(None))
    shared = db.scalar(
        select(Annotation.item_id)
        .where(*live)
        .group_by(Annotation.item_id)
        .having(func.count(Annotation.id) >= 2)
        .limit(1)
    )
    if shared is None:
        return float("nan")
    derived = derive(db, project, None, "dawid_skene")
    per_annotator = {
        int(a): int(n)
        for a, n in db.execute(
            select(Annotation.annotator_id, func.count(Annotation.id))
            .where(*live)
            .group_by(Annotation.annotator_id)
        )
    }
    if derived.annotator_accuracy is None:
        return float("nan")
    votes = np.asarray([per_annotator.get(a, 0) for a in derived.annotator_ids], np.float64)
    return mean_vote_accuracy(derived.annotator_accuracy, votes)


def _compute(
    db: Session, project: Project, method: str, blobs: BlobStore | None, probs_blob: str | None
) -> DerivedLabels:
    rows = db.execute(
        select(Annotation.item_id, Annotation.annotator_id, Annotation.class_index).where(
            Annotation.project_id == project.id, Annotation.retracted_at.is_(None)
        )
    ).all()
    votes = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    item_ids, items = np.unique(votes[:, 0], return_inverse=True)
    annotator_ids, annotators = np.unique(votes[:, 1], return_inverse=True)
    c = len(project.classes)
    probs = _model_probs(blobs, probs_blob, item_ids, c) if blobs and probs_blob else None
    used = method
    shared = bool((np.bincount(items.reshape(-1)) >= 2).any()) if len(votes) else False
    if method == "crowdlab" and (probs is None or not shared):
        # CROWDLAB weighs annotators by agreement on shared items: with no model view or no
        # item labelled twice there is nothing to weigh, so Dawid–Skene decides.
        used = "dawid_skene"
    if used == "dawid_skene" and not shared:
        # With one vote per item EM cannot tell an annotator's errors from the class priors
        # and drifts from the votes (music, one answer a song: 0.553 right as given, 0.510
        # after 100 EM steps, 0.201 after 1,000): each vote stands as it is until two meet.
        used = "majority"
    if method == "majority_tiebreak" and probs is not None and np.isnan(probs).any():
        probs = None  # not every item was scored: ties are broken by the seeded draw
    if used == "crowdlab" and probs is not None:
        probs = np.where(np.isnan(probs), 1.0 / c, probs)  # no model view: uniform
    result = aggregate(
        used,
        items.reshape(-1),
        annotators.reshape(-1),
        votes[:, 2],
        num_items=len(item_ids),
        num_annotators=len(annotator_ids),
        num_classes=c,
        model_probs=probs,
        seed=project.seed,
    )
    return DerivedLabels(
        method=method,
        method_used=used,
        item_ids=[int(i) for i in item_ids],
        label=result.label,
        posterior=result.posterior,
        tied=result.tied,
        annotator_ids=[int(a) for a in annotator_ids],
        annotator_accuracy=result.annotator_accuracy,
    )


def _held_out_blob(db: Session, project: Project) -> str | None:
    """The score artefact of the project's newest cleaning cycle that stored one."""
    if project.kind is not ProjectKind.clean:
        return None
    sha: str | None = db.scalar(
        select(Cycle.scores_sha256)
        .where(Cycle.project_id == project.id, Cycle.scores_sha256.is_not(None))
        .order_by(Cycle.number.desc())
        .limit(1)
    )
    return sha


def _model_probs(
    blobs: BlobStore, sha256: str, item_ids: np.ndarray, num_classes: int
) -> np.ndarray | None:
    """(L, C) the stored probabilities of ``item_ids``; NaN rows for items it lacks."""
    try:
        with np.load(io.BytesIO(blobs.get(sha256)), allow_pickle=False) as npz:
            if "probs" not in npz.files:
                return None
            ids, probs = npz["item_ids"], npz["probs"].astype(np.float64)
    except (OSError, ValueError, KeyError):
        return None
    if probs.shape != (len(ids), num_classes):
        return None
    out = np.full((len(item_ids), num_classes), np.nan)
    pos = np.searchsorted(ids, item_ids)
    pos = np.clip(pos, 0, max(len(ids) - 1, 0))
    found = (ids[pos] == item_ids) if len(ids) else np.zeros(len(item_ids), bool)
    out[found] = probs[pos[found]]
    return out
