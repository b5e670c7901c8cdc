"""Reading a cycle's stored scores artefact (an .npz in the blob store)."""

from __future__ import annotations

import io

import numpy as np

from app.core.blobs import BlobStore
from app.core.errors import NotFound
from app.cycles.models import Cycle
from app.cycles.schemas import ScoreHistogram


def histogram(blobs: BlobStore, cycle: Cycle, bins: int) -> ScoreHistogram:
    if cycle.scores_sha256 is None or not blobs.exists(cycle.scores_sha256):
        raise NotFound(f"cycle {cycle.id} has no scores yet", code="no_scores")
    with np.load(io.BytesIO(blobs.get(cycle.scores_sha256)), allow_pickle=False) as data:
        scores = np.asarray(data["scores"], dtype=np.float64)
        item_ids = np.asarray(data["item_ids"])
        selected = np.asarray(data["selected"])
    finite = scores[np.isfinite(scores)]
    counts, edges = (
        np.histogram(finite, bins=bins) if finite.size else (np.zeros(0, int), np.zeros(0))
    )
    position = {int(i): k for k, i in enumerate(item_ids)}
    picked = [float(scores[position[int(i)]]) for i in selected if int(i) in position]
    return ScoreHistogram(
        cycle_id=cycle.id,
        strategy=cycle.strategy,
        n=int(finite.size),
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        selected_scores=[s for s in picked if np.isfinite(s)],
    )
