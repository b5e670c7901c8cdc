"""Learning loss in the worker's cycle, in-process on SQLite (tasks recorded, run by hand):
the cycle trains the network with its loss module, stores both in the checkpoint, and the
shard tasks, which rebuild the network from it, queue what one task queues."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import make_engine
from app.core.task_names import SCORE_MERGE, SCORE_SHARD
from app.main import create_app
from tests.backends import fresh_sqlite
from tests.integration.loop import accounts, bearer
from tests.integration.test_ensemble_pipeline import _project, _queue
from tests.integration.test_shard_pipeline import Recorder
from worker.pipeline.acquire import run_acquire_cycle
from worker.pipeline.runtime import build_runtime
from worker.pipeline.shards import run_merge, run_shard

pytestmark = pytest.mark.slow
BATCH, SEED = 10, 7


def test_the_module_trains_with_the_cycle_and_survives_sharding(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(environment="test", data_dir=tmp_path / "data", database_url=url)
        one = build_runtime(settings.model_copy(update={"shard_size": 0}))
        many = build_runtime(settings.model_copy(update={"shard_size": 64}))
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, 0)[0])
        rec = Recorder()
        with TestClient(create_app(settings, engine=engine, task_sender=rec)) as client:
            cycles = {}
            for name in ("one", "many"):
                pid, _ = _project(client, h, name, strategy="learning_loss", params={})
                r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": SEED}, headers=h)
                assert r.status_code == 202, r.text
                cycles[name] = (pid, int(r.json()["id"]))
            assert run_acquire_cycle(one, cycles["one"][1], sender=rec) == f"queued {BATCH} items"
            c = cycles["many"][1]
            assert run_acquire_cycle(many, c, sender=rec) == "scoring in 2 shards"
            for args in rec.take(SCORE_SHARD.name):
                run_shard(many, *args, host="s", sender=rec)
            (merge,) = rec.take(SCORE_MERGE.name)
            assert run_merge(many, *merge) == f"queued {BATCH} items"
            first = client.get(
                f"/api/v1/projects/{cycles['one'][0]}/cycles/{cycles['one'][1]}", headers=h
            ).json()
            second = client.get(
                f"/api/v1/projects/{cycles['many'][0]}/cycles/{c}", headers=h
            ).json()
        assert first["checkpoint_sha256"] == second["checkpoint_sha256"]
        weights = torch.load(
            io.BytesIO(one.blobs.get(first["checkpoint_sha256"])), weights_only=True
        )
        assert any(k.startswith("module.") for k in weights)
        assert any(k.startswith("backbone.") for k in weights)
        assert _queue(one, cycles["one"][1]) == _queue(many, c)
        assert len(_queue(one, cycles["one"][1])) == BATCH
        engine.dispose()
