"""Adding items: payloads go to the blob store, rows to the database, all or nothing.

Blobs are written before the transaction commits; if it then rolls back, the blobs stay
as unreferenced content-addressed files, which is harmless (same content, same name).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import islice

import numpy as np
from sqlalchemy.orm import Session

from app.core.blobs import BlobStore
from app.core.enums import Split
from app.core.errors import Conflict, Unprocessable
from app.items import repository
from app.items.media import MEDIA_FLOAT32, PreparedItem
from app.items.models import Item, ItemFeature
from app.items.schemas import BulkResult, FeatureSetOut
from app.projects.models import Project

# Rows inserted per flush in a bulk upload: big enough that the round trips do not count,
# small enough that a part's payloads and ORM objects are a few MB.
PART_SIZE = 1000


def add_items(
    db: Session,
    blobs: BlobStore,
    project: Project,
    prepared: Sequence[PreparedItem],
    default_split: Split,
    seen: set[str] | None = None,
) -> list[Item]:
    """``seen``: external ids taken by earlier parts of the same upload."""
    _check_kind_fits_model(project, prepared)
    rows: list[Item] = []
    seen = set() if seen is None else seen
    mine: set[str] = set()
    for p in prepared:
        payload_sha = blobs.put(p.payload)
        external_id = p.external_id or payload_sha[:20]
        if external_id in seen:
            raise Conflict(
                f"external id {external_id!r} appears twice in this upload",
                code="duplicate_external_id",
            )
        seen.add(external_id)
        mine.add(external_id)
        split = Split(p.split) if p.split else default_split
        rows.append(
            Item(
                project_id=project.id,
                split=split,
                blob_sha256=payload_sha,
                media_type=p.media_type,
                width=p.width,
                height=p.height,
                external_id=external_id,
                meta=dict(p.meta),
            )
        )
    clash = repository.existing_external_ids(db, project.id, mine)
    if clash:
        shown = sorted(clash)[:10]
        raise Conflict(
            f"{len(clash)} external id(s) already exist in this project, e.g. {shown}",
            code="duplicate_external_id",
            detail={"existing": shown},
        )
    db.add_all(rows)
    db.flush()
    vectors = [
        (row.id, name, payload)
        for row, p in zip(rows, prepared, strict=True)
        for name, payload in p.features.items()
    ]
    if vectors:
        _put_features(db, blobs, project, vectors)
    return rows


def add_in_parts(
    db: Session,
    blobs: BlobStore,
    project: Project,
    prepared: Iterable[PreparedItem],
    default_split: Split,
    part: int = PART_SIZE,
) -> BulkResult:
    """:func:`add_items` for a bulk upload, ``part`` items at a time, in the one transaction.

    Each part's rows are inserted and then dropped from the session, and ``prepared`` is
    read as it goes (``NpzImport``, ``ZipImport`` make payloads lazily), so an upload holds
    one part's payloads and rows, not all of them (issue 15). Still all or nothing: a
    refusal in a later part rolls the earlier parts back with the request's transaction.
    """
    seen: set[str] = set()
    created, first_id, last_id, splits = 0, None, None, Counter[str]()
    items = iter(prepared)
    while chunk := list(islice(items, part)):
        rows = add_items(db, blobs, project, chunk, default_split, seen)
        created += len(rows)
        first_id = rows[0].id if first_id is None else first_id
        last_id = rows[-1].id
        splits.update(r.split.value for r in rows)
        for row in rows:
            db.expunge(row)
    return BulkResult(created=created, first_id=first_id, last_id=last_id, splits=dict(splits))


def summarise(rows: Sequence[Item]) -> BulkResult:
    return BulkResult(
        created=len(rows),
        first_id=rows[0].id if rows else None,
        last_id=rows[-1].id if rows else None,
        splits=dict(Counter(r.split.value for r in rows)),
    )


def _check_kind_fits_model(project: Project, prepared: Sequence[PreparedItem]) -> None:
    """Feature vectors go with the MLP, images with the CNNs; mixing them cannot train.
    A model on named vectors (``model_spec.input``) takes images, for people to see."""
    if project.model_spec.get("input"):
        if any(p.media_type == MEDIA_FLOAT32 for p in prepared):
            raise Unprocessable(
                f"this project's model takes the feature vector {project.model_spec['input']!r} "
                "of image items: upload images, with features_<name> beside them",
                code="wrong_media_for_model",
            )
        return
    wants_features = project.model_spec.get("name") == "mlp"
    dim = project.model_spec.get("input_shape", [0])[0]
    for p in prepared:
        is_features = p.media_type == "application/x-float32"
        if is_features != wants_features:
            what = "feature vectors" if wants_features else "images"
            raise Unprocessable(
                f"this project's model ({project.model_spec.get('name')}) takes {what}",
                code="wrong_media_for_model",
            )
        if is_features and p.width != dim:
            raise Unprocessable(
                f"feature vectors have {p.width} dimensions; the model takes {dim}",
                code="wrong_feature_dim",
            )


def attach_features(
    db: Session,
    blobs: BlobStore,
    project: Project,
    external_ids: Sequence[str],
    arrays: dict[str, np.ndarray],
) -> dict[str, int]:
    """Give items uploaded before their named vectors (row i of each array -> item
    ``external_ids[i]``), replacing a vector of the same name; all or nothing. Returns the
    vectors stored per name."""
    items = repository.by_external_ids(db, project.id, list(external_ids))
    unknown = [e for e in external_ids if e not in items]
    if unknown:
        raise Unprocessable(
            f"{len(unknown)} external id(s) name no item of this project, e.g. {unknown[:10]}",
            code="unknown_external_id",
            detail={"unknown": unknown[:10]},
        )
    vectors = [
        (items[e].id, name, arr[i].astype("<f4").tobytes())
        for name, arr in arrays.items()
        for i, e in enumerate(external_ids)
    ]
    _put_features(db, blobs, project, vectors)
    return {name: len(external_ids) for name in arrays}


def _put_features(
    db: Session, blobs: BlobStore, project: Project, vectors: Sequence[tuple[int, str, bytes]]
) -> None:
    """Store (item id, name, float32 bytes) vectors, replacing existing ones of that name. One
    name keeps one length per project, and the model's input takes its input shape's size."""
    dims: dict[str, int] = {}
    for name, dim in repository.feature_dims(db, project.id, {n for _, n, _ in vectors}).items():
        dims[name] = dim
    wanted = project.model_spec.get("input")
    model_dim = math.prod(project.model_spec.get("input_shape", [0]))
    existing = repository.features_of(db, [i for i, _, _ in vectors])
    for item_id, name, payload in vectors:
        dim = len(payload) // 4
        if dims.setdefault(name, dim) != dim:
            raise Unprocessable(
                f"feature vectors {name!r} of this project have {dims[name]} values; "
                f"these have {dim}",
                code="wrong_feature_dim",
            )
        if name == wanted and dim != model_dim:
            raise Unprocessable(
                f"the model takes {model_dim} values of {name!r} per item; these have {dim}",
                code="wrong_feature_dim",
            )
        sha = blobs.put(payload)
        row = existing.get((item_id, name))
        if row is None:
            row = ItemFeature(project_id=project.id, item_id=item_id, name=name, dim=dim)
            existing[(item_id, name)] = row
            db.add(row)
        row.blob_sha256 = sha
    db.flush()


def feature_summary(db: Session, project: Project) -> list[FeatureSetOut]:
    """Each vector name of the project: its length and how many items of each split have one."""
    wanted = project.model_spec.get("input")
    totals = repository.item_counts(db, project.id)
    out = []
    for name, dim, counts in repository.feature_counts(db, project.id):
        out.append(
            FeatureSetOut(
                name=name,
                dim=dim,
                items=sum(counts.values()),
                missing=sum(totals.values()) - sum(counts.values()),
                model_input=name == wanted,
            )
        )
    return out


def missing_model_input(db: Session, project: Project) -> int:
    """Items without the vector the project's model takes (0 when it takes the payload)."""
    wanted = project.model_spec.get("input")
    if not wanted:
        return 0
    return repository.count_without_feature(db, project.id, wanted)
