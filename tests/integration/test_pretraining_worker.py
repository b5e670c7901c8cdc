"""Pretraining in a real ``celery worker`` process: a run of 3 tiny epochs, which leaves only its
final checkpoint blob, then a cycle whose model starts from it; and a worker killed mid-run,
whose run resumes from its last epoch's checkpoint on redelivery and ends with the weights of a
run never interrupted."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.blobs import BlobStore, LocalBlobStore, open_blob_store
from app.core.config import Settings
from app.core.db import make_engine
from app.main import create_app
from tests.backends import fresh_database
from tests.integration.loop import (
    accounts,
    bearer,
    settings_for,
    upload_npz,
    wait_cycle,
    wait_pretraining,
    worker_env,
)
from tests.integration.processes import process
from tests.integration.workers import VISIBILITY_S, kill_when, setup, wait_until_redeliverable
from worker.ml.ssl import encoder_state

pytestmark = pytest.mark.slow


def _project(
    client: TestClient, h: dict[str, str], n_pool: int, side: int, clean: bool = False
) -> int:
    """Acquisition: 4 labelled pool items and 4 test items. Cleaning: every pool item has a
    (noisy) label and 2 cross-fitted fold models rank them."""
    spec = {
        "name": "small_cnn",
        "input_shape": [1, side, side],
        "hparams": {"epochs": 1, "batch_size": 8, "init": "pretraining"},
    }
    body: dict[str, Any] = {"name": "ssl", "classes": ["a", "b"], "model_spec": spec}
    body |= {"batch_size": 2}
    if clean:
        body |= {"name": "ssl-clean", "kind": "clean", "crossfit_folds": 2}
        body |= {"relabel_budget": 4, "strategy": "ce_minus_entropy"}
    r = client.post("/api/v1/projects", json=body, headers=h)
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_pool + 4, side, side), dtype=np.uint8)
    upload_npz(client, h, pid, images, ["pool"] * n_pool + ["test"] * 4)
    labelled = range(n_pool) if clean else [0, 1, 2, 3]
    votes = [
        {"external_id": f"m{k}", "annotator": "seed", "class_index": k % 2}
        for k in [*labelled, *range(n_pool, n_pool + 4)]
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=votes, headers=h)
    assert r.is_success, r.text
    return pid


def _blobs(settings: Settings) -> BlobStore:
    return open_blob_store(settings)


def _pretrain_then_cycle(
    client: TestClient, h: dict[str, str], pid: int, log: Path, blobs: LocalBlobStore
) -> tuple[dict[str, Any], dict[str, Any]]:
    body = {"epochs": EPOCHS_THEN_CYCLE, "batch_size": 8, "seed": 3}
    before = set(blobs.digests())
    r = client.post(f"/api/v1/projects/{pid}/pretraining", json=body, headers=h)
    assert r.status_code == 202, r.text
    run = wait_pretraining(client, h, pid, r.json()["id"], log)
    # Each epoch wrote a checkpoint; each one the next replaced was deleted.
    assert set(blobs.digests()) - before == {run["checkpoint_sha256"]}
    r = client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=h)
    assert r.status_code == 202, r.text
    return run, wait_cycle(client, h, pid, r.json()["id"], log, timeout=180)


EPOCHS_THEN_CYCLE = 3


def test_pretrain_three_epochs_then_a_cycle_starts_from_it(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as db_url:
        settings = settings_for("sqlite", db_url, tmp_path / "data")
        engine = make_engine(db_url)
        admin, _ = accounts(engine, settings, annotators=0)
        h = bearer(admin)
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            pid = _project(client, h, n_pool=16, side=16)
            clean_pid = _project(client, h, n_pool=16, side=16, clean=True)
            blobs = LocalBlobStore(settings.blobs)
            with process(["worker"], worker_env(settings), log):
                run, cycle = _pretrain_then_cycle(client, h, pid, log, blobs)
                clean_run, clean_cycle = _pretrain_then_cycle(client, h, clean_pid, log, blobs)
        engine.dispose()
    # The cleaning cycle's model (it trains on every label) and its two fold models (they
    # score held-out items) all started from its project's run.
    assert clean_cycle["pretraining_sha256"] == clean_run["checkpoint_sha256"]
    started = f"cycle {clean_cycle['id']} starts features from pretraining"
    assert log.read_text().count(started) == 3
    assert (run["epochs_done"], run["epochs"], run["items"], run["attempts"]) == (3, 3, 16, 1)
    assert len(run["losses"]) == 3
    assert run["last_loss"] == run["losses"][-1]
    assert (cycle["pretraining_id"], cycle["pretraining_sha256"]) == (
        run["id"],
        run["checkpoint_sha256"],
    )
    # The cycle's model trained on from the pretrained body (not a fresh one); a 1-epoch
    # fine-tune on 4 items moves it, but the checkpoint is what it started from.
    blobs = _blobs(settings)
    encoder = encoder_state(blobs.get(run["checkpoint_sha256"]))
    weights = torch.load(io.BytesIO(blobs.get(cycle["checkpoint_sha256"])), weights_only=True)
    assert set(encoder) == {k.removeprefix("body.") for k in weights if k.startswith("body.")}


EPOCHS = 20


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_worker_killed_mid_run_resumes_bit_identically(tmp_path: Path, backend: str) -> None:
    """Redis + Postgres: the broker redelivers the unacknowledged task after its visibility
    timeout. Embedded SQLite: the restarted worker re-sends the run (``worker/recovery.py``)."""
    broker = "redis" if backend == "postgres" else "embedded"
    visibility = str(VISIBILITY_S)
    with setup(backend, broker, tmp_path, ANNOLOOP_BROKER_VISIBILITY_TIMEOUT=visibility) as w:
        client, h = w.client, w.h
        pid = _project(client, h, n_pool=48, side=28)
        url = f"/api/v1/projects/{pid}/pretraining"
        body = {"epochs": EPOCHS, "batch_size": 8, "seed": 1}
        killed_id = client.post(url, json=body, headers=h).json()["id"]

        def run() -> dict[str, Any]:
            return dict(client.get(f"{url}/{killed_id}", headers=h).json())

        # As soon as the run has a checkpoint.
        seen = kill_when(lambda: run()["epochs_done"] >= 1, w.env, tmp_path / "worker-1.log")
        after = run()
        assert after["status"] == "running", after
        assert 1 <= after["epochs_done"] < EPOCHS
        wait_until_redeliverable(seen)
        second_log = tmp_path / "worker-2.log"
        with process(["worker"], w.env, second_log):
            resumed = wait_pretraining(client, h, pid, killed_id, second_log)
            # From the last checkpoint, not from scratch (which would end the same).
            assert f"pretraining {killed_id} resumes after epoch" in second_log.read_text()
            # The same run again, never interrupted.
            whole_id = client.post(url, json=body, headers=h).json()["id"]
            whole = wait_pretraining(client, h, pid, whole_id, second_log)
    assert resumed["attempts"] == 2  # the killed one, then the resumed one
    assert whole["attempts"] == 1
    assert resumed["losses"] == whole["losses"]
    blobs = _blobs(w.settings)
    a = encoder_state(blobs.get(resumed["checkpoint_sha256"]))
    b = encoder_state(blobs.get(whole["checkpoint_sha256"]))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
