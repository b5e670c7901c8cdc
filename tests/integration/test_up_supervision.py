"""``annoloop up`` keeps its worker alive (issue 15, item 15): a killed worker is started
again and takes work; stopping ``up`` leaves no worker behind. And a fresh folder takes
``annoloop migrate`` and ``create-admin`` without a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.processes import wait_healthy
from tests.integration.processes import env_for, free_port, process, reap, wait_for

pytestmark = pytest.mark.slow


def _workers_of(parent: int) -> list[int]:
    """Pids of ``app.cli worker`` processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"app.cli" in cmdline and b"worker" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_up_restarts_a_killed_worker_and_takes_it_down_on_exit(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "up.log"
    env = env_for({"ANNOLOOP_DATA_DIR": str(tmp_path / "data")})
    # Not reaped by ``process``: that ``up`` itself takes its worker down is what is checked.
    with process(["up", "--port", str(port)], env, log, reap_group=False) as up:
        wait_healthy(f"http://127.0.0.1:{port}", up, log, 60)
        first = wait_for(lambda: _workers_of(up.pid) or None, 30, "the worker", log)[0]
        wait_for(lambda: " ready." in log.read_text(errors="replace") or None, 90, "ready", log)
        os.kill(first, signal.SIGKILL)
        second = wait_for(
            lambda: [p for p in _workers_of(up.pid) if p != first] or None, 30, "a restart", log
        )[0]
        # The embedded broker has no broadcast (no Celery ping): the restarted worker's own
        # "ready" line, after it connected to the broker, is the sign it takes work again.
        wait_for(
            lambda: (
                (
                    " ready." in log.read_text(errors="replace").split("restarting it", 1)[-1]
                    and "restarting it" in log.read_text(errors="replace")
                )
                or None
            ),
            90,
            "the restarted worker to be ready",
            log,
        )
        assert "restarting it" in log.read_text()
    try:
        wait_for(lambda: (not _alive(second)) or None, 40, "the worker to stop with up", log)
    finally:
        reap(up)


def test_a_fresh_folder_takes_migrate_and_create_admin(tmp_path: Path) -> None:
    env = env_for({"ANNOLOOP_DATA_DIR": str(tmp_path / "nothing-here-yet")})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    early = cli("create-admin")
    assert early.returncode != 0
    assert "annoloop migrate" in early.stderr
    assert "Traceback" not in early.stderr
    migrated = cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    admin = cli("create-admin")
    assert admin.returncode == 0, admin.stderr
    assert admin.stdout.strip().startswith("al_")
