"""Active label cleaning end to end on Postgres + Redis with a real worker: noisy imported
labels, a ranked queue, relabelling until majorities settle, re-ranking every b labels, and
a stop when the relabel budget is spent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.db import make_engine
from app.demo.seed import load_demo_arrays
from app.main import create_app
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
from worker.pipeline.transitions import cleaning_queue_depth

pytestmark = pytest.mark.slow
N, BUDGET, B, BATCH = 200, 30, 10, 4


def test_cleaning_relabels_until_the_budget_is_spent(tmp_path: Path) -> None:
    images, truth = load_demo_arrays()
    images, truth = images[:N], truth[:N].astype(int)
    rng = np.random.default_rng(0)
    flip = rng.random(N) < 0.3
    noisy = np.where(flip, (truth + rng.integers(1, 10, N)) % 10, truth)
    with fresh_database("postgres", tmp_path) as db_url:
        settings = settings_for("redis", db_url, tmp_path / "data")
        engine = make_engine(db_url)
        admin, people = accounts(engine, settings, annotators=3)
        h = bearer(admin)
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = noisy_cleaning_project(
                client,
                h,
                people,
                images,
                noisy,
                classes=[str(d) for d in range(10)],
                input_shape=[1, 28, 28],
                batch_size=BATCH,
                relabel_budget=BUDGET,
                finetune_every=B,
            )
            with process(["worker"], worker_env(settings), log):
                first = client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h).json()
                cycle = wait_cycle(client, h, pid, first["id"], log)
                # The queue holds 2b ranked items, so it can serve b more while re-ranking.
                assert cycle["metrics"]["queued"] == cleaning_queue_depth(BATCH, B) == 2 * B
                # Scores came from 5 fold models, each predicting items it never trained on.
                crossfit = cycle["metrics"]["crossfit"]
                assert cycle["params"]["folds"] == crossfit["folds"] == 5
                assert sorted(crossfit["done"]) == ["0", "1", "2", "3", "4"]
                assert cycle["metrics"]["in_sample"] is False
                given = label_until(
                    client,
                    pid,
                    [t for _, t in people],
                    answer=lambda item: int(truth[int(item["external_id"][1:])]),
                    stop=lambda nxt: nxt["status"] == "budget_spent",
                )
            progress = client.get(f"/api/v1/projects/{pid}/progress", headers=h).json()
            cycles = client.get(f"/api/v1/projects/{pid}/cycles", headers=h).json()
            export = client.get(
                f"/api/v1/projects/{pid}/export", params={"format": "json"}, headers=h
            ).json()
        engine.dispose()

    assert given == BUDGET
    assert progress["labels_spent"] == BUDGET
    assert progress["labels_remaining"] == 0
    # Re-ranking happened while labelling, each time fine-tuning the previous model.
    assert len(cycles) >= 2
    assert all(c["state"] != "failed" for c in cycles)
    assert all(c["metrics"]["finetuned_from"] for c in cycles[1:] if c["metrics"])
    # Fold k of a later cycle fine-tunes fold model k of the one before (same folds).
    ranked = [c for c in cycles[1:] if c["metrics"].get("crossfit", {}).get("done")]
    assert ranked, cycles
    assert all(d["finetuned"] for c in ranked for d in c["metrics"]["crossfit"]["done"].values())
    cleaning = progress["cleaning"]
    assert cleaning["items_relabelled"] >= BUDGET // 3
    labels = {int(r["external_id"][1:]): r["class_index"] for r in export}
    changed = [i for i in range(N) if labels[i] != noisy[i]]
    assert cleaning["majority_changed"] == len(changed)
    # An oracle only ever corrects: a changed label is the truth, or a tie still being settled.
    assert all(labels[i] in (truth[i], None) for i in changed)
    before = float(np.mean(noisy == truth))
    after = float(np.mean([labels[i] == truth[i] for i in range(N)]))
    assert after > before
