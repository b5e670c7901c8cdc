"""CEAL in the worker's cycle, in-process on SQLite (tasks recorded, run by hand): the
pseudo-labels are recorded per cycle as an artefact, never become votes, labels or spent
budget, combine with an ensemble strategy (each member pseudo-labels with its own
predictions), and a bad option is a 422 that stores nothing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.annotations.models import Annotation
from app.core.config import Settings
from app.core.db import make_engine
from app.core.task_names import ENSEMBLE_JOIN, ENSEMBLE_MEMBER
from app.cycles.models import Cycle
from app.demo.seed import load_demo_arrays
from app.items.models import Item
from app.main import create_app
from tests.backends import fresh_sqlite
from tests.integration.loop import accounts, bearer, upload_npz
from tests.integration.test_shard_pipeline import Recorder
from worker.ml.ceal import fit, options_of
from worker.ml.data import ArrayDataset, LoaderPool, one_hot
from worker.ml.evaluation import evaluate
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.training import TrainConfig
from worker.pipeline.acquire import run_acquire_cycle
from worker.pipeline.ensemble import run_join, run_member
from worker.pipeline.runtime import build_runtime

pytestmark = pytest.mark.slow
N_POOL, N_TEST, BATCH, SEED = 300, 60, 10, 11
SPEC = {
    "name": "small_cnn",
    "input_shape": [1, 28, 28],
    "hparams": {"epochs": 25, "batch_size": 16},
}
CEAL = {"delta": 1.5, "decay": 0.1, "max_items": 50}


def _project(client: TestClient, h: dict[str, str], strategy: str, params: dict) -> int:
    images, labels = load_demo_arrays()
    r = client.post(
        "/api/v1/projects",
        json={
            "name": strategy,
            "classes": [str(d) for d in range(10)],
            "model_spec": SPEC,
            "strategy": strategy,
            "strategy_params": params,
            "batch_size": BATCH,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    upload_npz(client, h, pid, images[: N_POOL + N_TEST], ["pool"] * N_POOL + ["test"] * N_TEST)
    rows = [
        {"external_id": f"m{i}", "annotator": "seed", "class_index": int(labels[i])}
        for i in [*range(30), *range(N_POOL, N_POOL + N_TEST)]
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.status_code == 200, r.text
    return pid


def test_pseudo_labels_are_recorded_and_never_votes(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(environment="test", data_dir=tmp_path / "data", database_url=url)
        rt = build_runtime(settings.model_copy(update={"shard_size": 0}))
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, 0)[0])
        rec = Recorder()
        with TestClient(create_app(settings, engine=engine, task_sender=rec)) as client:
            # A bad option is refused with the key, and nothing is stored.
            with rt.factory() as db:
                before = db.scalar(select(func.count(Cycle.id)))
            pid = _project(client, h, "margin", {"ceal": CEAL})
            for bad, key in (({"ceal": {"delta": 0}}, "ceal.delta"), ({"ceal": []}, "ceal")):
                r = client.post(f"/api/v1/projects/{pid}/cycles", json={"params": bad}, headers=h)
                assert r.status_code == 422, r.text
                error = r.json()["error"]
                assert (error["code"], error["detail"]["key"]) == ("invalid_params", key), error
            with rt.factory() as db:
                assert db.scalar(select(func.count(Cycle.id))) == before

            with rt.factory() as db:
                votes = db.scalar(select(func.count(Annotation.id)))
            r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": SEED}, headers=h)
            assert r.status_code == 202, r.text
            c = int(r.json()["id"])
            assert r.json()["params"]["ceal"] == CEAL
            assert run_acquire_cycle(rt, c, sender=rec) == f"queued {BATCH} items"
            cycle = client.get(f"/api/v1/projects/{pid}/cycles/{c}", headers=h).json()
            pseudo = cycle["metrics"]["pseudo_labels"]
            assert pseudo["delta"] == pytest.approx(1.5)  # cycle 1: t = 0
            assert 0 < pseudo["count"] <= CEAL["max_items"]
            assert sum(pseudo["per_class"]) == pseudo["count"]
            with np.load(io.BytesIO(rt.blobs.get(pseudo["sha256"]))) as npz:
                stored = {k: npz[k] for k in npz.files}
            with rt.factory() as db:
                unlabelled = set(
                    db.scalars(
                        select(Item.id).where(
                            Item.project_id == pid,
                            Item.external_id.in_([f"m{i}" for i in range(30, N_POOL)]),
                        )
                    )
                )
                ext = {
                    int(i): str(e)
                    for i, e in db.execute(
                        select(Item.id, Item.external_id).where(Item.project_id == pid)
                    )
                }
                # Never votes: no annotation was written, nothing was spent.
                assert db.scalar(select(func.count(Annotation.id))) == votes
            assert set(stored["item_ids"].tolist()) <= unlabelled
            assert len(stored["item_ids"]) == pseudo["count"]
            assert (stored["entropy"] < 1.5).all()
            progress = client.get(f"/api/v1/projects/{pid}/progress", headers=h).json()
            assert progress["labels_spent"] == 0

            # The same two stages in one process give the same pseudo-labels and model.
            images, labels = load_demo_arrays()
            spec = ModelSpec.from_dict({**SPEC, "num_classes": 10})
            shape = spec.input_shape
            rows = list(range(30, N_POOL))
            model = build_model(spec, seed=SEED)
            _, mine = fit(
                model,
                ArrayDataset(images[:30], one_hot(labels[:30], 10), input_shape=shape),
                TrainConfig.from_hparams(spec.hparams),
                seed=SEED,
                options=options_of({"ceal": CEAL}),
                cycle_index=0,
                candidates=LoaderPool(ArrayDataset(images[rows], input_shape=shape), 256),
                pseudo_dataset=lambda p, t: ArrayDataset(
                    images[[rows[int(i)] for i in p]], t, input_shape=shape
                ),
            )
            assert mine is not None
            assert [f"m{rows[int(i)]}" for i in mine.positions] == [
                ext[int(i)] for i in stored["item_ids"]
            ]
            np.testing.assert_array_equal(mine.classes, stored["classes"])
            test = LoaderPool(
                ArrayDataset(images[N_POOL : N_POOL + N_TEST], input_shape=shape), 256
            )
            accuracy = evaluate(model, test, labels[N_POOL : N_POOL + N_TEST])["accuracy"]
            assert cycle["metrics"]["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)

            # With an ensemble: every member records its own pseudo-labels.
            ens = _project(client, h, "ensemble_consensus_entropy", {"members": 2, "ceal": CEAL})
            r = client.post(f"/api/v1/projects/{ens}/cycles", json={"seed": SEED}, headers=h)
            e = int(r.json()["id"])
            run_acquire_cycle(rt, e, sender=rec)
            for args in rec.take(ENSEMBLE_MEMBER.name):
                run_member(rt, *args, host="w", sender=rec)
            (join,) = rec.take(ENSEMBLE_JOIN.name)
            assert run_join(rt, *join, sender=rec) == f"queued {BATCH} items"
            done = client.get(f"/api/v1/projects/{ens}/cycles/{e}", headers=h).json()
            members = done["metrics"]["ensemble"]["done"]
            assert all(m["pseudo_labels"]["count"] > 0 for m in members.values())
            # Member 0 is not member 1: each picked with its own network.
            assert (
                members["0"]["pseudo_labels"]["sha256"] != members["1"]["pseudo_labels"]["sha256"]
            )
        engine.dispose()
