"""docker-compose.yml and the Dockerfile, without a Docker engine: the file's shape is checked
statically, and its migrate, api and worker services run natively — their own ``command:``
lines and ``environment:``, with the service hosts ``postgres``/``redis`` pointed at the local
servers — until a cycle reaches ``labeling``."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.demo.seed import load_demo_arrays
from tests.backends import REDIS_URL, fresh_postgres
from tests.deploy.compose import (
    ENV_EXAMPLE,
    ROOT,
    MissingVariable,
    Service,
    load,
    read_env_file,
    service,
    variable_names,
)
from tests.deploy.runtime import runtime_python
from tests.deploy.scrape import sample
from tests.integration.processes import env_for, free_port, process, wait_for

N_POOL, N_TEST, N_SEED, BATCH = 100, 20, 20, 10
REDIS_DB = 14
SECRETS = ("ANNOLOOP_SECRET_KEY", "POSTGRES_PASSWORD")


def example_variables() -> dict[str, str]:
    """.env.example as an operator would fill it in."""
    return {
        **read_env_file(ENV_EXAMPLE),
        "ANNOLOOP_SECRET_KEY": secrets.token_hex(32),
        "POSTGRES_PASSWORD": secrets.token_hex(12),
    }


# ---- the file's shape ---------------------------------------------------------------------


def test_env_example_names_every_variable_and_ships_no_secret() -> None:
    example = read_env_file(ENV_EXAMPLE)
    documented = set(example) | {
        line.lstrip("# ").split("=")[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.startswith("# ANNOLOOP_") or line.startswith("#ANNOLOOP_")
    }
    assert variable_names() <= documented
    for name in SECRETS:
        assert example[name] == "", f"{name} must be empty in .env.example"
    with pytest.raises(MissingVariable):  # compose refuses to start with the secrets unset
        load(example)


def test_services_wait_for_what_they_need() -> None:
    compose = load(example_variables())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "worker-gpu", "flower"} <= set(
        services
    )
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]
    assert any(str(v).endswith("/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert services["migrate"]["command"] == ["annoloop", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker", "worker-gpu"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["redis"]["condition"] == "service_healthy"
    assert services["api"]["ports"]


def test_workers_queues_gpu_profile_and_shared_blobs() -> None:
    compose = load(example_variables())
    variables = example_variables()
    worker = service(compose, "worker", variables)
    gpu = service(compose, "worker-gpu", variables)
    api = service(compose, "api", variables)
    assert _queues(worker) == {"default", "score", "train"}
    assert _queues(gpu) == {"train", "score"}
    spec = compose["services"]["worker-gpu"]
    assert spec["profiles"] == ["gpu"]
    device = spec["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert spec["build"]["args"]["TORCH_VARIANT"] == "cuda"
    assert compose["services"]["flower"]["profiles"] == ["flower"]
    # One named volume, mounted where ANNOLOOP_DATA_DIR points, in the api and every worker.
    for svc in (api, worker, gpu):
        assert svc.volumes.get("blobs") == svc.environment["ANNOLOOP_DATA_DIR"]
    assert "blobs" in compose["volumes"]
    # Production settings for every annoloop container; secrets only from .env.
    for svc in (api, worker, gpu):
        assert svc.environment["ANNOLOOP_ENVIRONMENT"] == "production"
        assert make_url(svc.environment["ANNOLOOP_DATABASE_URL"]).host == "postgres"
        assert urlsplit(svc.environment["ANNOLOOP_BROKER_URL"]).hostname == "redis"


def test_dockerfile_is_multi_stage_non_root_with_a_torch_variant() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # A ``# syntax=`` line makes every BuildKit build pull a frontend image from Docker Hub,
    # which a mirror-only or offline build host cannot reach; nothing here needs one.
    assert not dockerfile.lstrip().lower().startswith("# syntax")
    assert dockerfile.count("\nFROM ") >= 2
    assert "ARG TORCH_VARIANT=cpu" in dockerfile
    assert "download.pytorch.org/whl/cpu" in dockerfile
    assert "HEALTHCHECK" in dockerfile
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users
    assert all(u.split(":")[0] not in ("root", "0") for u in users)
    env_lines = [line for line in dockerfile.splitlines() if line.lstrip().startswith("ENV ")]
    assert not any("SECRET" in line or "PASSWORD" in line for line in env_lines)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored
    assert ".venv" in ignored
    assert ".git" in ignored


def _queues(svc: Service) -> set[str]:
    return set(svc.command[svc.command.index("--queues") + 1].split(","))


# ---- the services, run natively ----------------------------------------------------------


def _local_redis(db: int) -> str:
    parts = urlsplit(REDIS_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


def _native(svc: Service, db_url: str, volumes: Path, ports: dict[int, int]) -> dict[str, str]:
    """The service's environment with what Docker would provide replaced by local things."""
    env: dict[str, str] = {}
    for key, value in svc.environment.items():
        if key == "ANNOLOOP_DATABASE_URL":
            assert make_url(value).host == "postgres", value
            value = db_url  # a fresh, empty database: the migrate service must build it
        elif value.startswith("redis://"):
            assert urlsplit(value).hostname == "redis", value
            value = _local_redis(REDIS_DB)
        elif key == "ANNOLOOP_WORKER_METRICS_PORT":
            value = str(ports.setdefault(int(value), free_port()))
        for name, target in svc.volumes.items():
            if value == target or value.startswith(f"{target}/"):
                value = str(volumes / name) + value[len(target) :]
        env[key] = value
    return env_for(env)


def _args(svc: Service, ports: dict[int, int]) -> list[str]:
    """The ``command:`` line, minus the ``annoloop`` entry point; the container port given
    to ``--port`` is swapped for a free host port, as compose's port mapping would do."""
    command = list(svc.command)
    assert command[0] == "annoloop", command
    if "--port" in command:
        i = command.index("--port") + 1
        command[i] = str(ports.setdefault(int(command[i]), free_port()))
    return command[1:]


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


def _npz(images: np.ndarray) -> bytes:
    buf = io.BytesIO()
    split = np.array(["pool"] * N_POOL + ["test"] * N_TEST)
    np.savez(
        buf,
        images=images,
        split=split,
        external_ids=np.array([f"d{i}" for i in range(len(images))]),
    )
    return buf.getvalue()


def test_the_console_script_is_the_cli_the_test_runs() -> None:
    # The test runs ``python -m app.cli ARGS`` (tests/integration/processes.py); in the
    # image ``annoloop ARGS`` is this same entry point.
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "annoloop"]
    assert script.value == "app.cli:main"


@pytest.mark.slow
def test_compose_services_run_natively_and_a_cycle_reaches_labeling(tmp_path: Path) -> None:
    variables = example_variables()
    compose = load(variables)
    ports: dict[int, int] = {}
    with fresh_postgres(migrated=False) as db_url:
        redis.Redis.from_url(_local_redis(REDIS_DB)).flushdb()
        migrate_svc, api_svc, worker_svc = (
            service(compose, name, variables) for name in ("migrate", "api", "worker")
        )
        migrate_env = _native(migrate_svc, db_url, tmp_path, ports)
        api_env = _native(api_svc, db_url, tmp_path, ports)
        # Production answers /metrics 403 without a token; an operator sets one in .env.
        api_env["ANNOLOOP_METRICS_TOKEN"] = "compose-test-metrics-token"
        scrape = {"Authorization": "Bearer compose-test-metrics-token"}
        worker_env = _native(worker_svc, db_url, tmp_path, ports)
        assert api_env["ANNOLOOP_DATA_DIR"] == worker_env["ANNOLOOP_DATA_DIR"]

        python = runtime_python()  # the project without extras, as in the image
        with process(
            _args(migrate_svc, ports), migrate_env, tmp_path / "migrate.log", python
        ) as proc:
            assert proc.wait(180) == 0, (tmp_path / "migrate.log").read_text()[-3000:]
        engine = create_engine(db_url)
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version"))
        engine.dispose()

        admin = subprocess.run(
            [python, "-m", "app.cli", "create-admin"],
            env=api_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert admin.returncode == 0, admin.stderr[-3000:]
        token = admin.stdout.strip().splitlines()[-1]
        h = {"Authorization": f"Bearer {token}"}

        api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
        with (
            process(_args(api_svc, ports), api_env, api_log, python),
            process(_args(worker_svc, ports), worker_env, worker_log, python),
            httpx.Client(base_url=f"http://127.0.0.1:{ports[8000]}", timeout=30) as client,
        ):

            def healthy() -> bool | None:
                try:
                    return client.get("/healthz").status_code == 200 or None
                except httpx.TransportError:
                    return None

            wait_for(healthy, 90, "/healthz to answer 200", api_log)
            # The image's HEALTHCHECK commands, api and worker.
            api_check = {**api_env, "ANNOLOOP_HEALTHCHECK_URL": f"{client.base_url}/healthz"}
            assert _healthcheck("api", api_check) == 0
            wait_for(
                lambda: _healthcheck("worker", worker_env) == 0 or None,
                90,
                "the worker to answer a Celery ping",
                worker_log,
            )
            pid, cycle_id = _start_a_cycle(client, h)

            metrics = client.get("/metrics", headers=scrape).text
            assert sample(metrics, "annoloop_labels_last_minute", project=str(pid)) is not None
            total = sum(
                sample(metrics, "annoloop_labels_last_minute", project=str(pid), source=s) or 0
                for s in ("human", "import", "oracle")
            )
            assert total == N_SEED + N_TEST

            def labeling() -> dict[str, Any] | None:
                c = client.get(f"/api/v1/projects/{pid}/cycles/{cycle_id}", headers=h).json()
                assert c["state"] != "failed", c["error"]
                return c if c["state"] == "labeling" else None

            cycle = wait_for(labeling, 300, "the cycle to reach labeling", worker_log)
            metrics = client.get("/metrics", headers=scrape).text
            assert sample(metrics, "annoloop_queue_open_entries", project=str(pid)) == BATCH
            assert sample(metrics, "annoloop_cycles", project=str(pid), state="labeling") == 1
            assert (sample(metrics, "annoloop_cycle_phase_seconds", phase="train") or 0) > 0

            worker_metrics = wait_for(
                lambda: _scrape_worker(ports[9808]), 30, "the worker's metrics", worker_log
            )
            assert (
                sample(
                    worker_metrics,
                    "annoloop_worker_tasks_total",
                    task="annoloop.cycles.run",
                    state="SUCCESS",
                )
                == 1
            )
            assert (
                sample(
                    worker_metrics,
                    "annoloop_cycle_phase_duration_seconds_count",
                    project=str(pid),
                    phase="train",
                )
                == 1
            )
            # Logs written before the worker stops: the summary line follows the task.
            finished = wait_for(
                lambda: next(
                    (
                        line
                        for line in _json_lines(worker_log)
                        if line["message"] == "cycle task finished"
                        and line["cycle_state"] == "labeling"
                    ),
                    None,
                ),
                30,
                "the cycle's summary log line",
                worker_log,
            )

    _check_the_trace(api_log, worker_log, cycle, finished)


def _start_a_cycle(client: httpx.Client, h: dict[str, str]) -> tuple[int, int]:
    images, labels = load_demo_arrays()
    images, labels = images[: N_POOL + N_TEST], labels[: N_POOL + N_TEST]
    r = client.post(
        "/api/v1/projects",
        json={
            "name": "compose",
            "classes": [str(d) for d in range(10)],
            "model_spec": {
                "name": "small_cnn",
                "input_shape": [1, 28, 28],
                "hparams": {"epochs": 2},
            },
            "strategy": "entropy",
            "batch_size": BATCH,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    r = client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": ("digits.npz", _npz(images), "application/octet-stream")},
        headers=h,
    )
    assert r.status_code == 201, r.text
    seed = [int(np.flatnonzero(labels[:N_POOL] == d)[k]) for d in range(10) for k in range(2)]
    rows = [
        {"external_id": f"d{i}", "annotator": "seed", "class_index": int(labels[i])} for i in seed
    ]
    rows += [
        {"external_id": f"d{i}", "annotator": "truth", "class_index": int(labels[i])}
        for i in range(N_POOL, N_POOL + N_TEST)
    ]
    r = client.post(
        f"/api/v1/projects/{pid}/annotations:import",
        json=rows,
        headers={**h, "X-Request-ID": "compose-import-1"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["created"] == N_SEED + N_TEST
    r = client.post(
        f"/api/v1/projects/{pid}/cycles",
        json={},
        headers={**h, "X-Request-ID": "compose-cycle-1"},
    )
    assert r.status_code == 202, r.text
    assert r.headers["X-Request-ID"] == "compose-cycle-1"
    return pid, int(r.json()["id"])


def _healthcheck(role: str, env: dict[str, str]) -> int:
    return subprocess.run(
        [runtime_python(), "-m", "app.observability.healthcheck", role],
        env=env,
        capture_output=True,
        timeout=60,
    ).returncode


def _scrape_worker(port: int) -> str | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.TransportError:
        return None
    return r.text if "annoloop_worker_tasks_total" in r.text else None


def _check_the_trace(
    api_log: Path, worker_log: Path, cycle: dict[str, Any], finished: dict[str, Any]
) -> None:
    """The chain of docs/deploy.md "Tracing a label", on real JSON log lines."""
    api_lines = _json_lines(api_log)
    imported = [line for line in api_lines if line["message"] == "labels imported"]
    assert imported
    assert imported[0]["request_id"] == "compose-import-1"
    assert imported[0]["count"] == N_SEED + N_TEST
    access = [line for line in api_lines if line.get("logger") == "annoloop.access"]
    assert any(line["request_id"] == "compose-cycle-1" for line in access)

    worker_lines = _json_lines(worker_log)
    cycle_lines = [line for line in worker_lines if line.get("cycle_id") == cycle["id"]]
    started = next(line for line in cycle_lines if line["message"] == "task started")
    # The task carries the request that started the cycle.
    assert started["request_id"] == "compose-cycle-1"
    assert started["task_id"]
    assert finished["task_id"] == started["task_id"]
    assert finished["labelled_set_hash"] == cycle["labelled_set_hash"]
    assert finished["cycle_state"] == "labeling"
    assert finished["checkpoint_sha256"] == cycle["checkpoint_sha256"]
    # Lines from inside the pipeline (after the snapshot) carry the hash too.
    snap = next(line for line in cycle_lines if line["message"] == "cycle training set snapshotted")
    assert snap["labelled_set_hash"] == cycle["labelled_set_hash"]
    after = cycle_lines[cycle_lines.index(snap) + 1 :]
    assert after
    assert all(
        line["labelled_set_hash"] == cycle["labelled_set_hash"] and line["task_id"]
        for line in after
    )


def test_object_storage_is_a_profile_that_every_annoloop_service_can_use() -> None:
    services = load(example_variables())["services"]
    minio = services["minio"]
    assert minio["profiles"] == ["s3"]
    assert minio["healthcheck"]["test"]
    # migrate creates the bucket, so it waits for MinIO when the profile runs, not otherwise.
    wait = services["migrate"]["depends_on"]["minio"]
    assert wait["condition"] == "service_healthy"
    assert wait["required"] is False
    for name in ("migrate", "api", "worker", "worker-gpu"):
        env = services[name]["environment"]
        assert {"ANNOLOOP_BLOB_URL", "ANNOLOOP_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"} <= set(env)
