"""scripts/compose_smoke.sh: checked statically everywhere; run for real only when asked
(``ANNOLOOP_TEST_COMPOSE_SMOKE=1`` and a Docker Engine), since it builds a multi-GB image: CI
does not run it (docs/deploy.md, "Checking the stack end to end")."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.deploy.compose import ROOT

SCRIPT = ROOT / "scripts" / "compose_smoke.sh"


def test_the_script_is_valid_bash() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_it_runs_as_its_own_compose_project_and_cleans_up() -> None:
    text = SCRIPT.read_text()
    # `down -v` deletes volumes: never those of the operator's own `annoloop` project.
    assert "PROJECT=${SMOKE_PROJECT:-annoloop-smoke}" in text
    assert 'docker compose -p "$PROJECT"' in text
    assert "down -v" in text
    assert "trap finish EXIT" in text
    # Base images from arguments, so that it works without Docker Hub.
    for name in ("ANNOLOOP_PYTHON_IMAGE", "ANNOLOOP_POSTGRES_IMAGE", "ANNOLOOP_REDIS_IMAGE"):
        assert name in text
    for step in ("create-admin", "items:bulk", "annotations:import", "labeling", "9808/metrics"):
        assert step in text, step


@pytest.mark.slow
def test_the_stack_end_to_end_on_a_docker_engine() -> None:
    if os.environ.get("ANNOLOOP_TEST_COMPOSE_SMOKE") != "1":
        pytest.skip("opt-in: ANNOLOOP_TEST_COMPOSE_SMOKE=1 with a Docker Engine")
    if shutil.which("docker") is None:
        pytest.fail("ANNOLOOP_TEST_COMPOSE_SMOKE=1 but there is no docker command")
    done = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=3600, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert "smoke: OK" in done.stdout
