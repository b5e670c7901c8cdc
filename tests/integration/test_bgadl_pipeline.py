"""BGADL through a real ``celery worker`` process (never eager mode), on each configured
database with its broker: the cycle trains the default VAE-ACGAN and the task model on the
labelled items, one reconstruction and one sample from noise per item, records the samples as
a blob named in ``metrics.generated`` (with their source items' ids), and queues only pool
items: no generated sample becomes an item, an annotation or a queue entry. Two projects with
the same data and cycle seed get the same checkpoint, and a BALD project (the same network, no
generated samples) a different one."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.annotations.models import Annotation
from app.core.blobs import open_blob_store
from app.core.db import make_engine, make_session_factory
from app.demo.seed import load_demo_arrays
from app.items.models import Item
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import BACKENDS, fresh_database
from tests.integration.loop import (
    accounts,
    bearer,
    settings_for,
    upload_npz,
    wait_cycle,
    worker_env,
)
from tests.integration.processes import process

pytestmark = pytest.mark.slow
# Tiny on purpose: 16x16 crops (the smallest the BGADL encoder takes), 3 classes, a few items,
# two epochs each for the task model and the generator, so the worker's cycle takes seconds.
N_POOL, N_TEST, N_LABELLED, BATCH, SEED = 30, 6, 9, 4, 5
SPEC = {
    "name": "small_cnn",
    "input_shape": [1, 16, 16],
    "hparams": {"epochs": 2, "batch_size": 8, "dropout": 0.5},
}
PARAMS = {"mc_samples": 4, "latent_dim": 8, "epochs": 2, "batch_size": 4}
SETUPS = [s for s in [("sqlite", "embedded"), ("postgres", "redis")] if s[0] in BACKENDS]


def _data() -> tuple[np.ndarray, np.ndarray]:
    """Centre 16x16 crops of the demo digits 0-2: pool first, then test."""
    images, labels = load_demo_arrays()
    keep = np.flatnonzero(labels < 3)[: N_POOL + N_TEST]
    return images[keep][:, 6:22, 6:22].copy(), labels[keep]


def _project(client: TestClient, h: dict[str, str], name: str, strategy: str = "bgadl") -> int:
    images, labels = _data()
    r = client.post(
        "/api/v1/projects",
        json={
            "name": name,
            "classes": ["0", "1", "2"],
            "model_spec": SPEC,
            "strategy": strategy,
            "strategy_params": PARAMS if strategy == "bgadl" else {"mc_samples": 4},
            "batch_size": BATCH,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    upload_npz(client, h, pid, images, ["pool"] * N_POOL + ["test"] * N_TEST)
    rows = [
        {"external_id": f"m{i}", "annotator": "seed", "class_index": int(labels[i])}
        for i in [*range(N_LABELLED), *range(N_POOL, N_POOL + N_TEST)]
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    return pid


@pytest.mark.parametrize(("db_backend", "broker"), SETUPS)
def test_bgadl_generates_in_a_real_worker_and_queues_only_pool_items(
    db_backend: str, broker: str, tmp_path: Path
) -> None:
    with fresh_database(db_backend, tmp_path) as db_url:
        settings = settings_for(broker, db_url, tmp_path / "data")
        engine = make_engine(db_url)
        factory = make_session_factory(engine)
        h = bearer(accounts(engine, settings, 0)[0])
        log = tmp_path / "worker.log"
        try:
            with TestClient(create_app(settings, engine=engine)) as client:
                pids = [_project(client, h, name) for name in ("a", "b")]
                # BALD trains the same network on the labelled items alone.
                plain = _project(client, h, "bald", strategy="bald")
                with factory() as db:
                    items_before = db.scalar(select(func.count(Item.id)))
                    votes_before = db.scalar(select(func.count(Annotation.id)))
                    labelled = {
                        pid: set(
                            db.scalars(
                                select(Item.id).where(
                                    Item.project_id == pid,
                                    Item.external_id.in_([f"m{i}" for i in range(N_LABELLED)]),
                                )
                            )
                        )
                        for pid in pids
                    }
                    unlabelled = {
                        pid: set(
                            db.scalars(
                                select(Item.id).where(
                                    Item.project_id == pid,
                                    Item.external_id.in_(
                                        [f"m{i}" for i in range(N_LABELLED, N_POOL)]
                                    ),
                                )
                            )
                        )
                        for pid in pids
                    }
                cids = []
                for pid in pids:
                    r = client.post(
                        f"/api/v1/projects/{pid}/cycles", json={"seed": SEED}, headers=h
                    )
                    assert r.status_code == 202, r.text
                    cids.append(int(r.json()["id"]))
                r = client.post(f"/api/v1/projects/{plain}/cycles", json={"seed": SEED}, headers=h)
                assert r.status_code == 202, r.text
                plain_cid = int(r.json()["id"])
                env = worker_env(settings, OMP_NUM_THREADS="1")  # a shared 2-core machine
                with process(["worker"], env, log):
                    cycles = [
                        wait_cycle(client, h, pid, cid, log, timeout=240)
                        for pid, cid in zip(pids, cids, strict=True)
                    ]
                    bald = wait_cycle(client, h, plain, plain_cid, log, timeout=240)
            with factory() as db:
                queued = {
                    cid: list(
                        db.scalars(select(QueueEntry.item_id).where(QueueEntry.cycle_id == cid))
                    )
                    for cid in cids
                }
                external = {
                    int(i): str(e) for i, e in db.execute(select(Item.id, Item.external_id))
                }
                # No generated sample became an item or a vote.
                assert db.scalar(select(func.count(Item.id))) == items_before
                assert db.scalar(select(func.count(Annotation.id))) == votes_before
        finally:
            engine.dispose()
    blobs = open_blob_store(settings)
    truth = _data()[1]
    for pid, cid, cycle in zip(pids, cids, cycles, strict=True):
        assert cycle["state"] == "labeling", cycle
        generated = cycle["metrics"]["generated"]
        # A reconstruction and a sample from noise per labelled item, each with its class.
        assert generated["count"] == 2 * N_LABELLED
        assert generated["from_noise"] == N_LABELLED
        assert sum(generated["per_class"]) == 2 * N_LABELLED
        assert set(generated["losses"]) == {"encoder", "generator", "discriminator", "classifier"}
        with np.load(io.BytesIO(blobs.get(generated["sha256"]))) as npz:
            stored = {k: npz[k] for k in npz.files}
        assert sorted(stored["source_item_ids"].tolist()) == sorted([*labelled[pid]] * 2)
        assert stored["from_noise"].tolist() == [False] * N_LABELLED + [True] * N_LABELLED
        assert stored["inputs"].shape == (2 * N_LABELLED, 1, 16, 16)
        assert np.isfinite(stored["inputs"]).all()
        # Each sample carries its source item's label.
        want = [int(truth[int(external[i][1:])]) for i in stored["source_item_ids"].tolist()]
        assert stored["targets"].argmax(axis=1).tolist() == want
        # The queue holds B distinct pool items that were unlabelled, nothing generated.
        assert len(queued[cid]) == BATCH
        assert len(set(queued[cid])) == BATCH
        assert set(queued[cid]) <= unlabelled[pid]
        assert cycle["metrics"]["queued"] == BATCH
    # Same data, same cycle seed: the same network, generator included in its training.
    assert cycles[0]["checkpoint_sha256"] == cycles[1]["checkpoint_sha256"]
    # ... and not BALD's: the generated samples were trained on.
    assert "generated" not in bald["metrics"]
    assert bald["checkpoint_sha256"] != cycles[0]["checkpoint_sha256"]
