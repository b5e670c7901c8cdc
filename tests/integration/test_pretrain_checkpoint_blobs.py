"""A SimCLR run's superseded per-epoch checkpoint blobs are deleted, and only once the row
names the newer one (in-process pipeline, SQLite): at every delete the committed row names a
blob the store still holds, so a crash there leaves a run that can resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.blobs import LocalBlobStore
from app.core.config import Settings
from app.core.db import make_engine
from app.main import create_app
from app.pretraining.models import Pretraining
from tests.backends import fresh_sqlite
from tests.integration.loop import accounts, bearer, upload_npz
from tests.integration.test_shard_pipeline import Recorder
from worker.pipeline.pretrain import run_pretraining
from worker.pipeline.runtime import Runtime, build_runtime

pytestmark = pytest.mark.slow
EPOCHS = 3


class CheckedDeletes(LocalBlobStore):
    """Deletes only after the run's committed row has moved on to a blob that is there."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.rt: Runtime | None = None
        self.deleted: list[str] = []

    def delete(self, sha256: str) -> None:
        assert self.rt is not None
        with self.rt.factory() as db:
            named = [r.checkpoint_sha256 for r in db.query(Pretraining)]
        assert sha256 not in named
        assert all(self.exists(s) for s in named if s is not None)
        self.deleted.append(sha256)
        super().delete(sha256)


def test_only_the_final_checkpoint_is_kept_and_never_before_its_commit(tmp_path: Path) -> None:
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(environment="test", data_dir=tmp_path / "data", database_url=url)
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, annotators=0)[0])
        blobs = CheckedDeletes(settings.blobs)
        rt = dataclasses.replace(build_runtime(settings), blobs=blobs)
        blobs.rt = rt
        with TestClient(create_app(settings, engine=engine, task_sender=Recorder())) as client:
            spec = {"name": "small_cnn", "input_shape": [1, 16, 16], "hparams": {"epochs": 1}}
            body = {"name": "ckpt", "classes": ["a", "b"], "model_spec": spec}
            r = client.post("/api/v1/projects", json=body, headers=h)
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            images = np.random.default_rng(0).integers(0, 256, (12, 16, 16), np.uint8)
            upload_npz(client, h, pid, images, ["pool"] * 12)
            before = set(blobs.digests())
            url_runs = f"/api/v1/projects/{pid}/pretraining"
            body = {"epochs": EPOCHS, "batch_size": 4, "seed": 2}
            run_id = client.post(url_runs, json=body, headers=h).json()["id"]
            assert run_pretraining(rt, run_id).startswith(f"pretrained {EPOCHS} epochs")
            run = client.get(f"{url_runs}/{run_id}", headers=h).json()
        rt.engine.dispose()
        engine.dispose()
    assert run["status"] == "done"
    assert set(blobs.digests()) - before == {run["checkpoint_sha256"]}
    # Epochs 1 and 2's checkpoints, each deleted once epoch 2 and 3 were recorded.
    assert len(blobs.deleted) == EPOCHS - 1
    assert run["checkpoint_sha256"] not in blobs.deleted
    assert not any(blobs.exists(s) for s in blobs.deleted)
