"""Labels out: per item, every vote and the label derived from them."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.annotations.derived import derive
from app.annotations.models import Annotation
from app.annotations.votes import VoteSummary, summarise
from app.auth.models import Annotator
from app.core.blobs import BlobStore
from app.core.enums import LabelSource, ProjectKind
from app.items.models import Item
from app.projects.models import Project

CSV_FIELDS = [
    "external_id",
    "split",
    "label",
    "class_index",
    "method",
    "posterior",
    "tied",
    "votes",
    "counts",
    "relabelled",
]


def rows(
    db: Session, project: Project, blobs: BlobStore | None = None, method: str | None = None
) -> Iterator[dict[str, Any]]:
    """One dict per item that has at least one live vote, in item id order; the label is
    derived by ``method`` (default: the project's aggregation model)."""
    derived = derive(db, project, blobs, method)
    names = dict(db.execute(select(Annotator.id, Annotator.name)).all())
    votes_by_item: dict[int, list[Annotation]] = {}
    for vote in db.scalars(
        select(Annotation)
        .where(Annotation.project_id == project.id, Annotation.retracted_at.is_(None))
        .order_by(Annotation.item_id, Annotation.id)
    ):
        votes_by_item.setdefault(vote.item_id, []).append(vote)
    items = db.execute(
        select(Item.id, Item.external_id, Item.split)
        .where(Item.project_id == project.id)
        .order_by(Item.id)
    )
    for item_id, external_id, split in items:
        if item_id not in votes_by_item:
            continue
        votes = votes_by_item[item_id]
        summary = summarise((v.class_index for v in votes), len(project.classes))
        label = derived.describe(item_id, list(project.classes)) or _by_majority(
            summary, list(project.classes)
        )
        row: dict[str, Any] = {
            "item_id": item_id,
            "external_id": external_id,
            "split": split.value,
            "label": label["label"],
            "class_index": label["class_index"],
            "method": label["method"],
            "posterior": label["posterior"],
            "tied": summary.tied,
            "counts": summary.counts,
            "votes": [
                {
                    "annotator": names.get(v.annotator_id),
                    "class_index": v.class_index,
                    "class": project.classes[v.class_index],
                    "source": v.source.value,
                    "cycle_id": v.cycle_id,
                    "created_at": v.created_at.isoformat(),
                }
                for v in votes
            ],
        }
        if project.kind is ProjectKind.clean:
            row["relabelled"] = any(v.source is not LabelSource.import_ for v in votes)
        yield row


def _by_majority(summary: VoteSummary, classes: list[str]) -> dict[str, Any]:
    """A vote that arrived after the derivation read the votes (read committed): its item is
    labelled by plain majority in this export."""
    k = summary.majority
    return {
        "method": "majority",
        "class_index": k,
        "label": classes[k] if k is not None else None,
        "posterior": summary.distribution,
        "tied": summary.tied,
    }


def as_jsonl(rows_: Iterator[dict[str, Any]]) -> Iterator[str]:
    for row in rows_:
        yield json.dumps(row) + "\n"


# A spreadsheet runs a cell that begins with one of these as a formula (OWASP "CSV injection"):
# names, ids and class names come from users, so such a cell gets a leading apostrophe, which
# spreadsheets show as text and hide. JSON and JSONL keep the values as they are.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def as_csv(rows_: Iterator[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows_:
        flat = dict(row)
        flat["votes"] = ";".join(
            f"{v['annotator']}:{v['class_index']}:{v['source']}:{v['created_at']}"
            for v in row["votes"]
        )
        flat["counts"] = " ".join(str(c) for c in row["counts"])
        flat["posterior"] = " ".join(f"{p:.4f}" for p in row["posterior"])
        writer.writerow({k: inert_cell(v) for k, v in flat.items()})
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue()
