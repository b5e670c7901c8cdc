"""Active label cleaning on real crowd labels: a CIFAR-10H subset through the API alone.

Initial labels are one tempered draw from each image's CIFAR-10H votes (T = 2, as the cleaning
paper's protocol does); every relabel is a fresh draw from the untempered votes, so the
annotators disagree the way the real crowd did and some items need several labels before a
strict majority forms. Postgres + Redis with a real worker process.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.db import make_engine
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
from tests.shared_data import load_shared

pytestmark = pytest.mark.slow
N, AMBIGUOUS, BUDGET, B, BATCH, PEOPLE, T = 160, 60, 40, 10, 4, 6, 2.0


def _subset(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows: the AMBIGUOUS most ambiguous images plus a seeded sample of the rest."""
    p = counts / counts.sum(1, keepdims=True)
    entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(1) / np.log(counts.shape[1])
    by_ambiguity = np.argsort(-entropy, kind="stable")
    rest = rng.choice(by_ambiguity[AMBIGUOUS:], N - AMBIGUOUS, replace=False)
    return np.sort(np.concatenate([by_ambiguity[:AMBIGUOUS], rest]))


def test_cleaning_a_cifar10h_subset_spends_its_budget_and_settles_majorities(
    tmp_path: Path,
) -> None:
    data = load_shared("cifar10h.npz")
    rng = np.random.default_rng(7)
    rows = _subset(data["counts"], rng)
    images, counts = data["images"][rows], data["counts"][rows].astype(float)
    votes = counts / counts.sum(1, keepdims=True)
    true_majority = votes.argmax(1)
    tempered = votes ** (1 / T)
    tempered /= tempered.sum(1, keepdims=True)
    noisy = np.array([rng.choice(10, p=t) for t in tempered])

    asked: Counter[int] = Counter()

    def crowd(item: dict[str, Any]) -> int:
        # Seeded by (row, how often asked) so a rerun asks the same questions the same answers.
        i = int(item["external_id"][1:])
        asked[i] += 1
        draw = np.random.default_rng([11, i, asked[i]])
        return int(draw.choice(10, p=votes[i]))

    with fresh_database("postgres", tmp_path) as db_url:
        settings = settings_for("redis", db_url, tmp_path / "data")
        engine = make_engine(db_url)
        admin, people = accounts(engine, settings, annotators=PEOPLE)
        h = bearer(admin)
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = noisy_cleaning_project(
                client,
                h,
                people,
                images,
                noisy,
                classes=[str(c) for c in data["class_names"]],
                input_shape=[3, 32, 32],
                batch_size=BATCH,
                relabel_budget=BUDGET,
                finetune_every=B,
            )
            with process(["worker"], worker_env(settings), log):
                first = client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h).json()
                wait_cycle(client, h, pid, first["id"], log)
                given = label_until(
                    client,
                    pid,
                    [t for _, t in people],
                    answer=crowd,
                    stop=lambda nxt: nxt["status"] == "budget_spent",
                )
            progress = client.get(f"/api/v1/projects/{pid}/progress", headers=h).json()
            cycles = client.get(f"/api/v1/projects/{pid}/cycles", headers=h).json()
            export = client.get(
                f"/api/v1/projects/{pid}/export", params={"format": "json"}, headers=h
            ).json()
        engine.dispose()

    assert given == BUDGET == progress["labels_spent"]
    assert progress["labels_remaining"] == 0
    assert len(cycles) >= 2
    assert all(c["state"] != "failed" for c in cycles)
    by_row = {int(row["external_id"][1:]): row for row in export}
    relabelled = [i for i, row in by_row.items() if row["relabelled"]]
    assert relabelled
    assert progress["cleaning"]["items_relabelled"] == len(relabelled)
    # Each relabelled item got one label per annotator at most: the crowd is six people.
    per_item: defaultdict[int, Counter[str]] = defaultdict(Counter)
    for i in relabelled:
        for vote in by_row[i]["votes"]:
            per_item[i][vote["annotator"]] += vote["source"] == "human"
    assert all(max(c.values()) <= 1 for c in per_item.values())
    # Only items still being asked about when the budget ran out (one queued batch) may be tied.
    assert sum(by_row[i]["tied"] for i in relabelled) <= BATCH
    changed = [i for i in range(N) if by_row[i]["class_index"] != noisy[i]]
    assert progress["cleaning"]["majority_changed"] == len(changed)
    before = int(np.sum(noisy == true_majority))
    after = sum(by_row[i]["class_index"] == true_majority[i] for i in range(N))
    assert after > before, (before, after)
