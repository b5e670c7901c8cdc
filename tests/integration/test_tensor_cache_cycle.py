"""Cycles through the worker path (in-process, SQLite, no broker) with the tensor cache on and
off: the same checkpoint bytes and the same queue; the next cycle decodes no item the cache
already holds, and a cycle of a project whose payloads differ never reads them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import make_engine
from app.cycles.models import Cycle
from app.demo.seed import load_demo_arrays
from app.items.models import Item
from app.main import create_app
from app.queue.models import QueueEntry
from tests.backends import fresh_sqlite
from tests.integration.loop import accounts, bearer, upload_npz
from tests.integration.test_shard_pipeline import Recorder
from worker.ml.tensor_cache import BuildStats, TensorCache
from worker.pipeline.acquire import run_acquire_cycle
from worker.pipeline.runtime import Runtime, build_runtime

pytestmark = pytest.mark.slow
N_POOL, N_TEST, BATCH = 240, 60, 10


class RecordingCache(TensorCache):
    """A tensor cache that keeps the stats of every list it was asked for."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        super().__init__(root, max_bytes)
        self.builds: list[BuildStats] = []

    def rows(self, *args: Any, **kwargs: Any) -> np.ndarray:
        out = super().rows(*args, **kwargs)
        assert self.last_build is not None
        self.builds.append(self.last_build)
        return out


def _project(
    client: TestClient, h: dict[str, str], name: str, images: np.ndarray, labels: np.ndarray
) -> int:
    r = client.post(
        "/api/v1/projects",
        json={
            "name": name,
            "classes": [str(d) for d in range(10)],
            "model_spec": {
                "name": "small_cnn",
                "input_shape": [1, 28, 28],
                "hparams": {"epochs": 2, "batch_size": 16},
            },
            "strategy": "margin",
            "batch_size": BATCH,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    upload_npz(client, h, pid, images, ["pool"] * N_POOL + ["test"] * N_TEST)
    first = [int(np.flatnonzero(labels[:N_POOL] == d)[0]) for d in range(10)]
    rows = [
        {"external_id": f"m{i}", "annotator": "seed", "class_index": int(labels[i])} for i in first
    ]
    rows += [
        {"external_id": f"m{i}", "annotator": "truth", "class_index": int(labels[i])}
        for i in range(N_POOL, N_POOL + N_TEST)
    ]
    r = client.post(f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h)
    assert r.is_success, r.text
    return pid


def _queue(rt: Runtime, cycle_id: int) -> list[str]:
    with rt.factory() as db:
        return list(
            db.scalars(
                select(Item.external_id)
                .join(QueueEntry, QueueEntry.item_id == Item.id)
                .where(QueueEntry.cycle_id == cycle_id)
                .order_by(QueueEntry.rank)
            )
        )


def _checkpoint(rt: Runtime, cycle_id: int) -> str | None:
    with rt.factory() as db:
        return db.scalar(select(Cycle.checkpoint_sha256).where(Cycle.id == cycle_id))


def _cycle(client: TestClient, h: dict[str, str], pid: int, run: Callable[[int], str]) -> int:
    r = client.post(f"/api/v1/projects/{pid}/cycles", json={"seed": 3}, headers=h)
    assert r.status_code == 202, r.text
    cycle_id = int(r.json()["id"])
    assert run(cycle_id) == f"queued {BATCH} items"
    return cycle_id


def _label(
    client: TestClient,
    h: dict[str, str],
    pid: int,
    cycle_id: int,
    queued: Sequence[str],
    labels: np.ndarray,
) -> None:
    assert client.post(f"/api/v1/projects/{pid}/cycles/{cycle_id}/cancel", headers=h).is_success
    rows = [
        {"external_id": e, "annotator": "oracle", "class_index": int(labels[int(e[1:])])}
        for e in queued
    ]
    assert client.post(
        f"/api/v1/projects/{pid}/annotations:import", json=rows, headers=h
    ).is_success


def test_cached_cycles_equal_uncached_ones_and_decode_each_item_once(tmp_path: Path) -> None:
    images, labels = load_demo_arrays()
    images, labels = images[: N_POOL + N_TEST], labels[: N_POOL + N_TEST]
    # The same items with every pixel inverted: other payloads, the same external ids.
    inverted = 255 - images
    with fresh_sqlite(tmp_path) as url:
        settings = Settings(environment="test", data_dir=tmp_path / "data", database_url=url)
        plain = build_runtime(settings.model_copy(update={"tensor_cache_bytes": 0}))
        assert plain.tensors is None
        cache = RecordingCache(settings.tensor_cache, 1 << 30)
        cached = dataclasses.replace(build_runtime(settings), tensors=cache)
        engine = make_engine(url)
        h = bearer(accounts(engine, settings, 0)[0])
        rec = Recorder()
        with TestClient(create_app(settings, engine=engine, task_sender=rec)) as client:
            a = _project(client, h, "cached", images, labels)
            b = _project(client, h, "plain", images, labels)
            c1 = _cycle(client, h, a, lambda c: run_acquire_cycle(cached, c, sender=rec))
            p1 = _cycle(client, h, b, lambda c: run_acquire_cycle(plain, c, sender=rec))
            assert _checkpoint(cached, c1) == _checkpoint(plain, p1) is not None
            assert _queue(cached, c1) == _queue(plain, p1)
            # Labelled (trained on), candidates (scored), test (evaluated): each decoded once.
            decoded = [s.decoded for s in cache.builds]
            assert sorted(decoded) == [10, N_TEST, N_POOL - 10], decoded

            # The next cycle: ten candidates became labelled; every row is in the cache.
            _label(client, h, a, c1, _queue(cached, c1), labels)
            _label(client, h, b, p1, _queue(plain, p1), labels)
            cache.builds.clear()
            c2 = _cycle(client, h, a, lambda c: run_acquire_cycle(cached, c, sender=rec))
            p2 = _cycle(client, h, b, lambda c: run_acquire_cycle(plain, c, sender=rec))
            assert [s.decoded for s in cache.builds] == [0] * len(cache.builds)
            assert sum(s.reused for s in cache.builds if not s.hit) > 0
            assert _checkpoint(cached, c2) == _checkpoint(plain, p2)
            assert _queue(cached, c2) == _queue(plain, p2)

            # Other payloads under the same ids: all decoded anew, and trained on as themselves.
            d = _project(client, h, "inverted", inverted, labels)
            cache.builds.clear()
            d1 = _cycle(client, h, d, lambda c: run_acquire_cycle(cached, c, sender=rec))
            assert sum(s.decoded for s in cache.builds) == N_POOL + N_TEST
            assert _checkpoint(cached, d1) != _checkpoint(cached, c1)
        engine.dispose()
