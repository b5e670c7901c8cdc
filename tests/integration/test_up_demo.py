"""``annoloop up --demo`` on the embedded default: health within 60 s, first cycle labelling."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.processes import wait_healthy
from tests.integration.processes import env_for, free_port, process, wait_for

pytestmark = pytest.mark.slow


def test_up_demo_serves_health_and_reaches_labeling(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    env = env_for({"ANNOLOOP_DATA_DIR": str(tmp_path / "data")})
    started = time.monotonic()
    with process(["up", "--demo", "--port", str(port)], env, log) as up:
        wait_healthy(base, up, log, 60)
        health_after = time.monotonic() - started
        token = wait_for(
            lambda: (m := re.search(r"admin token\s+(al_\S+)", log.read_text())) and m.group(1),
            30,
            "the demo tokens",
            log,
        )
        h = {"Authorization": f"Bearer {token}"}

        def first_cycle() -> dict[str, Any] | None:
            projects = httpx.get(f"{base}/api/v1/projects", headers=h).json()
            cycles = httpx.get(f"{base}/api/v1/projects/{projects[0]['id']}/cycles", headers=h)
            cycle = cycles.json()[0]
            assert cycle["state"] != "failed", cycle["error"]
            return cycle if cycle["state"] == "labeling" else None

        cycle = wait_for(first_cycle, 180, "the demo cycle to reach labeling", log)
        annotator = re.search(r"annotator token\s+(al_\S+)", log.read_text())
        assert annotator is not None
        me = httpx.get(
            f"{base}/api/v1/me", headers={"Authorization": f"Bearer {annotator.group(1)}"}
        )
        assert me.json()["role"] == "annotator"
        page = httpx.get(f"{base}/", timeout=5)
        assert page.status_code == 200
    assert health_after < 60
    assert cycle["metrics"]["queued"] == 50
    assert cycle["metrics"]["test"]["accuracy"] > 0.3  # 20 labels already beat chance (0.1)
