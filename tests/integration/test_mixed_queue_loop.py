"""ActiveLab's mixed queue end to end on Postgres + Redis with a real worker: a cleaning
project whose pool holds noisily labelled and unlabelled items ranks both together, asks one
label an entry, re-ranks every b labels and stops at the budget."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.annotations.models import Annotation
from app.core.db import make_engine
from app.core.enums import LabelSource
from app.demo.seed import load_demo_arrays
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import fresh_database
from tests.integration.loop import (
    accounts,
    bearer,
    label_until,
    noisy_cleaning_project,
    settings_for,
    wait_cycle,
    worker_env,
)
from tests.integration.processes import process

pytestmark = pytest.mark.slow
N, IMPORTED, BUDGET, B, BATCH = 160, 100, 24, 8, 4


def test_mixed_queue_ranks_new_items_and_relabels_together(tmp_path: Path) -> None:
    images, truth = load_demo_arrays()
    images, truth = images[:N], truth[:N].astype(int)
    rng = np.random.default_rng(1)
    noisy = np.where(rng.random(N) < 0.3, (truth + rng.integers(1, 10, N)) % 10, truth)
    with fresh_database("postgres", tmp_path) as db_url:
        settings = settings_for("redis", db_url, tmp_path / "data")
        engine = make_engine(db_url)
        admin, people = accounts(engine, settings, annotators=3)
        h = bearer(admin)
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = noisy_cleaning_project(
                client, h, people, images, noisy, classes=[str(d) for d in range(10)],
                input_shape=[1, 28, 28], batch_size=BATCH, relabel_budget=BUDGET,
                finetune_every=B, strategy="activelab", imported=IMPORTED,
            )  # fmt: skip
            with process(["worker"], worker_env(settings), log):
                first = client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h).json()
                cycle = wait_cycle(client, h, pid, first["id"], log)
                given = label_until(
                    client,
                    pid,
                    [t for _, t in people],
                    answer=lambda item: int(truth[int(item["external_id"][1:])]),
                    stop=lambda nxt: nxt["status"] == "budget_spent",
                )
            cycles = client.get(f"/api/v1/projects/{pid}/cycles", headers=h).json()
        with engine.connect() as db:
            entries = db.execute(
                select(QueueEntry.cycle_id, QueueEntry.item_id, QueueEntry.rank,
                       QueueEntry.score, QueueEntry.labels_wanted)
                .where(QueueEntry.project_id == pid)
            ).all()  # fmt: skip
            human = db.execute(
                select(Annotation.item_id, Annotation.annotator_id).where(
                    Annotation.project_id == pid, Annotation.source == LabelSource.human
                )
            ).all()
        engine.dispose()

    assert given == BUDGET == len(human)
    metrics = cycle["metrics"]
    assert metrics["labelled_scored"] == IMPORTED
    assert metrics["new_scored"] == N - IMPORTED
    assert metrics["in_sample"] is False
    assert 0 <= metrics["queued_new"] <= metrics["queued"]
    # Every entry asks for one label; the first queue follows the ActiveLab scores upwards.
    assert {w for *_, w in entries} == {1}
    first_queue = sorted((r, s) for c, _, r, s, _ in entries if c == cycle["id"])
    scores = [s for _, s in first_queue]
    assert scores == sorted(scores)
    # The stored artefact holds every scored item, ids ascending, with its probabilities.
    (stored,) = Path(settings.blobs).rglob(cycle["scores_sha256"])
    with np.load(io.BytesIO(stored.read_bytes())) as npz:
        ids = npz["item_ids"]
        assert len(ids) == N
        assert (np.diff(ids) > 0).all()
        assert npz["probs"].shape == (N, 10)
    # Nobody labelled an item twice, and re-ranks fine-tuned the previous model.
    assert len(set(human)) == len(human)
    assert len(cycles) >= 2
    assert all(c["state"] != "failed" for c in cycles)
