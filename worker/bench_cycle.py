"""``annoloop bench --only cycle``: one real acquisition cycle through the worker path against
the same work written as plain in-memory PyTorch, in the same run.

Worker path: a scratch SQLite database and blob folder, the project set up through the API
(in-process), MNIST digits uploaded as PNG items, labels imported, then
``run_acquire_cycle`` as the worker's task runs it: read the inputs, train, checkpoint,
evaluate, score, open the queue. Its cache holds what the previous cycle left (the same items
with the last batch still unlabelled), as in a running loop; the cost of a cold fill (first
cycle on a host) is printed on its own line.

Bare: the same images as one float tensor in memory, the same model and initial weights, the
same optimiser, batches and dropout seeds as ``train`` (so the same model comes out), a plain
``no_grad`` pass for evaluation, and the same strategy over a ``TensorPool``.

Ratios: worker / bare for train, evaluate, score and the cycle wall (worker: the whole task;
bare: train + evaluate + score). ``before`` rows run the worker with the tensor cache off
(``tensor_cache_bytes=0``: every read decodes its PNG), i.e. the data path before issue 19.
Each figure is the minimum over ``--repeats`` (at most 3 here) interleaved runs. On a shared
machine wall times follow the load; ``cycle CPU time`` (process CPU seconds, worker task vs bare
script) does not, with ``--threads 1``.
"""

from __future__ import annotations

import io
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from worker.bench import Config, Row, _judge, _ratio_row

TARGET = 1.1


@dataclass(frozen=True)
class Size:
    label: str
    labels: int
    epochs: int
    strategy: str
    candidates: int | None  # noise stability scores a seeded subset of the unlabelled pool
    pool: int
    test: int
    batch: int = 96
    query: int = 20


FULL = (
    Size("220 labels/50 ep/noise_stability@1000", 220, 50, "noise_stability", 1000, 8000, 2000),
    Size("4000 labels/10 ep/entropy@pool", 4000, 10, "entropy", None, 8000, 2000),
)
QUICK = (
    Size("60 labels/2 ep/noise_stability@100", 60, 2, "noise_stability", 100, 600, 200),
    Size("300 labels/1 ep/entropy@pool", 300, 1, "entropy", None, 600, 200),
)


@dataclass
class World:
    """One scratch deployment with one project per size."""

    root: Path
    settings: Any
    engine: Any
    client: Any
    headers: dict[str, str]
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,)


class _NoSend:
    """Task sender of the in-process API: nothing is sent (the bench runs the task itself)."""

    def send(self, name: str, args: list[Any], queue: str) -> None:
        pass


def bench_cycle(cfg: Config) -> list[Row]:
    sizes = QUICK if cfg.quick else FULL
    repeats = 1 if cfg.quick else max(1, min(cfg.repeats, 3))
    images, labels, source = _mnist(cfg, max(s.pool + s.test for s in sizes))
    print(f"  cycle: data {source}, {repeats} repeat(s)", flush=True)
    rows: list[Row] = []
    with _world(images, labels) as world:
        for size in sizes:
            rows.extend(_bench_size(world, size, repeats, cfg))
    return rows


def _bench_size(world: World, size: Size, repeats: int, cfg: Config) -> list[Row]:
    # Imported before any timing: a worker process has them loaded from its first task on.
    import worker.pipeline.acquire  # noqa: F401
    from worker.pipeline.runtime import build_runtime

    pid, pool_rows, test_rows, labelled_rows = _project(world, size)
    cached_rt = build_runtime(world.settings)
    plain_rt = build_runtime(world.settings.model_copy(update={"tensor_cache_bytes": 0}))
    spec = _spec(size)
    x_all = torch.from_numpy(world.images).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(world.labels.astype(np.int64))
    lab_mask = np.isin(pool_rows, labelled_rows)
    data = {
        "labelled": x_all[pool_rows[lab_mask]],
        "targets": F.one_hot(y[pool_rows[lab_mask]], 10).float(),
        "candidates": x_all[pool_rows[~lab_mask]],
        "test": x_all[test_rows],
        "test_labels": y[test_rows],
    }
    best: dict[str, dict[str, float]] = {}
    accuracy: dict[str, float] = {}
    fill_s = math.inf
    for _ in range(repeats):
        for name in ("bare", "worker", "before"):
            if name == "bare":
                t, acc = _bare(spec, size, data, cfg.device)
            else:
                rt = cached_rt if name == "worker" else plain_rt
                if rt.tensors is not None:
                    fill_s = min(fill_s, _prefill(world, rt, pid, size))
                t, acc = _worker(world, rt, pid)
            accuracy[name] = acc
            best[name] = {k: min(v, best.get(name, {}).get(k, math.inf)) for k, v in t.items()}
    tag = size.label
    out: list[Row] = []
    bare = best["bare"]
    for phase in ("train", "evaluate", "score"):
        out.append(
            _ratio_row(
                f"cycle {tag}: {phase}", best["worker"][phase], bare[phase], "bare", None, cfg
            )
        )
    bare_wall = bare["train"] + bare["evaluate"] + bare["score"]
    out.append(
        _ratio_row(
            f"cycle {tag}: cycle wall", best["worker"]["wall"], bare_wall, "bare", TARGET, cfg
        )
    )
    out.append(
        _ratio_row(
            f"cycle {tag}: cycle CPU time", best["worker"]["cpu"], bare["cpu"], "bare", None, cfg
        )
    )
    out.append(
        _ratio_row(
            f"cycle {tag}: cycle CPU time, before (no cache)",
            best["before"]["cpu"],
            bare["cpu"],
            "bare",
            None,
            cfg,
        )
    )
    out.append(
        _ratio_row(
            f"cycle {tag}: cycle wall, before (no cache)",
            best["before"]["wall"],
            bare_wall,
            "bare",
            None,
            cfg,
        )
    )
    out.append(
        _ratio_row(
            f"cycle {tag}: first fill of the cache (cold host)",
            fill_s,
            bare_wall,
            "bare wall",
            None,
            cfg,
        )
    )
    same = abs(accuracy["worker"] - accuracy["bare"]) < 1e-6  # float32 vs float64 means
    out.append(
        Row(
            f"cycle {tag}: test accuracy worker = bare (same work)",
            f"{accuracy['worker']:.4f}",
            f"bare {accuracy['bare']:.4f}",
            None,
            "equal",
            _judge(same, False, cfg),
        )
    )
    return out


# --------------------------------------------------------------------------------------------
# the worker path
# --------------------------------------------------------------------------------------------


@contextmanager
def _world(images: np.ndarray, labels: np.ndarray) -> Iterator[World]:
    """A scratch deployment (SQLite, blob folder, tensor cache) and an in-process API."""
    from fastapi.testclient import TestClient

    from app.auth.service import create_annotator, issue_token
    from app.cli import migrate
    from app.core.config import Settings
    from app.core.db import make_engine, make_session_factory, unit_of_work
    from app.core.enums import Role
    from app.main import create_app

    root = Path(tempfile.mkdtemp(prefix="annoloop-bench-cycle-"))
    try:
        settings = Settings(environment="test", data_dir=root, rate_limit_labels_per_minute=0)
        settings.ensure_dirs()
        migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        with unit_of_work(make_session_factory(engine)) as db:
            admin = create_annotator(db, actor=None, name="bench", role=Role.admin)
            token, _ = issue_token(db, admin, settings.secret_key)
        app = create_app(settings, engine=engine, task_sender=_NoSend())
        with TestClient(app) as client:
            yield World(
                root, settings, engine, client, {"Authorization": f"Bearer {token}"}, images, labels
            )
        engine.dispose()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _spec(size: Size) -> dict[str, Any]:
    return {
        "name": "small_cnn",
        "input_shape": [1, 28, 28],
        "hparams": {"epochs": size.epochs, "batch_size": size.batch, "lr": 1e-3},
    }


def _ok(r: Any) -> Any:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}")
    return r.json() if r.content else None


def _project(world: World, size: Size) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """A project with ``size.pool`` pool and ``size.test`` test digits, ``size.labels`` of the
    pool labelled (seeded), the test split labelled; returns (id, pool, test, labelled rows)."""
    c, h = world.client, world.headers
    params = {} if size.candidates is None else {"candidates": size.candidates}
    pid = _ok(
        c.post(
            "/api/v1/projects",
            json={
                "name": f"bench {size.label}",
                "classes": [str(d) for d in range(10)],
                "model_spec": _spec(size),
                "strategy": size.strategy,
                "strategy_params": params,
                "batch_size": size.query,
            },
            headers=h,
        )
    )["id"]
    perm = np.random.default_rng(0).permutation(len(world.images))
    pool = np.sort(perm[: size.pool])
    test = np.sort(perm[size.pool : size.pool + size.test])
    rows = np.concatenate([pool, test])
    splits = ["pool"] * len(pool) + ["test"] * len(test)
    for start in range(0, len(rows), 5000):
        part = rows[start : start + 5000]
        buf = io.BytesIO()
        np.savez(
            buf,
            images=world.images[part],
            split=np.asarray(splits[start : start + 5000]),
            external_ids=np.array([f"r{r}" for r in part]),
        )
        files = {"archive": ("data.npz", buf.getvalue(), "application/octet-stream")}
        _ok(c.post(f"/api/v1/projects/{pid}/items:bulk", files=files, headers=h))
    labelled = np.sort(np.random.default_rng(1).choice(pool, size.labels, replace=False))
    votes = [
        {"external_id": f"r{r}", "annotator": "truth", "class_index": int(world.labels[r])}
        for r in np.concatenate([labelled, test])
    ]
    for start in range(0, len(votes), 2000):
        _ok(
            c.post(
                f"/api/v1/projects/{pid}/annotations:import",
                json=votes[start : start + 2000],
                headers=h,
            )
        )
    return int(pid), pool, test, labelled


def _start(world: World, pid: int) -> int:
    """A new cycle (seed 0) of project ``pid``, the previous one cancelled first."""
    c, h = world.client, world.headers
    for cycle in _ok(c.get(f"/api/v1/projects/{pid}/cycles", headers=h)):
        if cycle["state"] not in ("completed", "cancelled", "failed"):
            _ok(c.post(f"/api/v1/projects/{pid}/cycles/{cycle['id']}/cancel", headers=h))
    return int(_ok(c.post(f"/api/v1/projects/{pid}/cycles", json={"seed": 0}, headers=h))["id"])


def _prefill(world: World, rt: Any, pid: int, size: Size) -> float:
    """Empty the tensor cache, then leave in it what the previous cycle would have: the same
    items with the last ``size.query`` labelled ones still candidates. Returns the seconds of
    that fill from nothing (a cold host's first cycle)."""
    from worker.ml.spec import ModelSpec
    from worker.pipeline.common import dataset_of
    from worker.pipeline.datasets import CachedItemDataset
    from worker.pipeline.snapshot import ItemRefs, load_inputs

    shutil.rmtree(rt.settings.tensor_cache, ignore_errors=True)
    cycle_id = _start(world, pid)
    with rt.factory() as db:
        from app.cycles.models import Cycle

        inputs = load_inputs(db, db.get(Cycle, cycle_id), rt.blobs)
    spec = ModelSpec.from_dict(inputs.model_spec)
    lab, cand = inputs.labelled, inputs.candidates
    keep = len(lab) - size.query
    moved = ItemRefs(lab.ids[keep:], lab.hashes[keep:], lab.media_types[keep:])
    before_lab = ItemRefs(lab.ids[:keep], lab.hashes[:keep], lab.media_types[:keep])
    before_cand = ItemRefs(
        cand.ids + moved.ids, cand.hashes + moved.hashes, cand.media_types + moved.media_types
    )
    t0 = time.perf_counter()
    for refs in (before_lab, before_cand, inputs.test):
        dataset = dataset_of(rt, refs, spec)
        assert isinstance(dataset, CachedItemDataset)
        dataset.rows()
    return time.perf_counter() - t0


def _worker(world: World, rt: Any, pid: int) -> tuple[dict[str, float], float]:
    from app.cycles.models import Cycle
    from worker.pipeline.acquire import run_acquire_cycle

    cycle_id = _start(world, pid)
    c0, t0 = time.process_time(), time.perf_counter()
    outcome = run_acquire_cycle(rt, cycle_id, sender=_NoSend())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not outcome.startswith("queued"):
        raise RuntimeError(f"the bench cycle did not queue: {outcome}")
    with rt.factory() as db:
        cycle = db.get(Cycle, cycle_id)
        timings, metrics = dict(cycle.timings), dict(cycle.metrics)
    return (
        {
            "train": float(timings["train_s"]),
            "evaluate": float(timings["evaluate_s"]),
            "score": float(timings["score_s"]),
            "wall": wall,
            "cpu": cpu,
        },
        float(metrics["test"]["accuracy"]),
    )


# --------------------------------------------------------------------------------------------
# the same work, bare
# --------------------------------------------------------------------------------------------


def _bare(
    spec_dict: dict[str, Any], size: Size, data: dict[str, Tensor], device: torch.device
) -> tuple[dict[str, float], float]:
    from worker.ml.data import TensorPool
    from worker.ml.models import build_model
    from worker.ml.spec import ModelSpec
    from worker.ml.strategies import get_strategy
    from worker.ml.strategies.base import ScoringContext

    spec = ModelSpec.from_dict({**spec_dict, "num_classes": 10})
    x, t = data["labelled"].to(device), data["targets"].to(device)
    n, bs = len(x), size.batch
    out: dict[str, float] = {}

    c0 = time.process_time()
    t0 = time.perf_counter()
    model = build_model(spec, seed=0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.train()
        for _ in range(size.epochs):
            # What a shuffled DataLoader draws from its generator each epoch: a base seed, the
            # order, and a second permutation RandomSampler draws for a remainder of 0 items.
            # Drawn alike here, the bare loop sees the same batches, so trains the same model.
            torch.empty((), dtype=torch.int64).random_(generator=g)
            order = torch.randperm(n, generator=g)
            torch.randperm(n, generator=g)
            stop = n - n % bs if n > 1 and n % bs == 1 else n
            for start in range(0, stop, bs):
                idx = order[start : start + bs]
                loss = -(t[idx] * F.log_softmax(model(x[idx]), dim=1)).sum(dim=1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    out["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        test = data["test"].to(device)
        pred = torch.cat([model(b).argmax(dim=1) for b in test.split(256)])
    accuracy = float((pred.cpu() == data["test_labels"]).float().mean())
    out["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    params = {} if size.candidates is None else {"candidates": size.candidates}
    strategy = get_strategy(size.strategy, **params)
    ctx = ScoringContext(
        model=model,
        pool=TensorPool(data["candidates"], 256),
        labelled=TensorPool(data["labelled"], 256),
        device=device,
        seed=0,
        batch_size=256,
    )
    strategy.select(ctx, size.query)
    out["score"] = time.perf_counter() - t0
    out["cpu"] = time.process_time() - c0
    return out, accuracy


def _mnist(cfg: Config, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    path = cfg.data_dir / "mnist10k.npz"
    if path.exists():
        with np.load(path) as d:
            return d["images"][:n], d["labels"][:n].astype(np.int64), f"{path.name}[:{n}]"
    from app.demo.seed import load_demo_arrays

    images, labels = load_demo_arrays()
    reps = -(-n // len(images))
    note = f"the demo digits x{reps} (mnist10k.npz not found)"
    return np.tile(images, (reps, 1, 1))[:n], np.tile(labels, reps)[:n], note
