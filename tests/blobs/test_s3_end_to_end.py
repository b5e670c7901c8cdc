"""The API and a real worker process share nothing but the database, the broker and a bucket:
each has its own data folder, as on two hosts. A cycle trains, scores and queues, its
checkpoint and scores land in the bucket, and the API serves payloads and scores from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from app.auth.service import create_annotator, issue_token
from app.core.blobs import blob_key
from app.core.config import Settings
from app.core.db import make_engine, make_session_factory, unit_of_work
from app.core.enums import Role
from app.main import create_app
from tests.backends import BACKENDS, REDIS_URL, fresh_database
from tests.blobs.conftest import Bucket
from tests.integration.processes import env_for, process, wait_for
from tests.integration.test_worker_cycle import BATCH, _prepare_project

pytestmark = pytest.mark.slow
PREFIX = "annoloop"


def _services(backend: str, db_url: str, shared: Path) -> dict[str, str]:
    if backend == "postgres":
        redis.Redis.from_url(REDIS_URL).flushdb()
        broker = result = REDIS_URL
    else:  # the embedded broker's files stand in for a broker host
        broker = f"sqla+sqlite:///{shared / 'broker.sqlite'}"
        result = f"db+sqlite:///{shared / 'results.sqlite'}"
    return {"database_url": db_url, "broker_url": broker, "result_backend": result}


def test_a_cycle_runs_with_every_blob_in_the_bucket(bucket: Bucket, tmp_path: Path) -> None:
    backend = "postgres" if "postgres" in BACKENDS else "sqlite"
    shared, api_dir, worker_dir = (tmp_path / d for d in ("shared", "api", "worker"))
    shared.mkdir()
    with fresh_database(backend, shared) as db_url:
        services = _services(backend, db_url, shared)
        settings = Settings(
            environment="test",
            data_dir=api_dir,
            blob_url=bucket.url(PREFIX),
            s3_endpoint_url=bucket.server.endpoint,
            **services,  # type: ignore[arg-type]
        )
        engine = make_engine(settings.database_url)
        with unit_of_work(make_session_factory(engine)) as db:
            admin = create_annotator(db, actor=None, name="admin", role=Role.admin)
            token, _ = issue_token(db, admin, settings.secret_key)
        h = {"Authorization": f"Bearer {token}"}
        worker_env = env_for(
            {
                "ANNOLOOP_DATA_DIR": str(worker_dir),
                "ANNOLOOP_BLOB_URL": bucket.url(PREFIX),
                **{f"ANNOLOOP_{k.upper()}": v for k, v in services.items()},
                **bucket.server.env(),
            }
        )
        log = tmp_path / "worker.log"
        with TestClient(create_app(settings, engine=engine)) as client:
            assert client.get("/healthz").json()["blobs"] == "ok"
            pid, cycle_id, _ = _prepare_project(client, h)
            with process(["worker"], worker_env, log):

                def labeling() -> dict[str, Any] | None:
                    c = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}", headers=h).json()
                    assert c["state"] != "failed", c["error"]
                    return c if c["state"] == "labeling" else None

                cycle = wait_for(labeling, 240, "the cycle to reach labeling", log)
            queue = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}/queue", headers=h)
            first = queue.json()[0]["item_id"]
            item = client.get(f"/api/v1/items/{first}", headers=h).json()
            payload = client.get(f"/api/v1/items/{first}/payload", headers=h)
            hist = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}/scores", headers=h)
        engine.dispose()

    keys = set(bucket.objects())
    for sha in (cycle["checkpoint_sha256"], cycle["scores_sha256"], item["blob_sha256"]):
        assert f"{PREFIX}/{blob_key(sha)}" in keys
    assert payload.status_code == 200
    assert payload.headers["content-type"] == "image/png"
    assert payload.content == bucket.store(PREFIX).get(item["blob_sha256"])
    assert hist.status_code == 200, hist.text
    assert sum(hist.json()["counts"]) == hist.json()["n"] > 0
    assert len(queue.json()) == BATCH
    # Nothing went to a blob folder on either "host"; the worker read items through its copy.
    assert not (api_dir / "blobs").exists()
    assert not (worker_dir / "blobs").exists()
    copies = [p for p in (worker_dir / "blob-cache").rglob("*") if p.is_file()]
    assert len(copies) > BATCH
