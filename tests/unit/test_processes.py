"""``app.core.processes``: a child that dies while we wait for its health is reported with its
log, and stopping ends the child's whole process group."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from app.core.processes import ProcessFailed, free_port, started, wait_healthy


def test_a_child_that_exits_while_we_wait_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    code = "print('cannot start: port taken'); raise SystemExit(3)"
    with started([sys.executable, "-c", code], dict(os.environ), log) as proc:
        t0 = time.monotonic()
        with pytest.raises(ProcessFailed, match="exited with 3") as failed:
            wait_healthy(f"http://127.0.0.1:{free_port()}", proc, log, timeout=60)
    assert "cannot start: port taken" in str(failed.value)
    assert time.monotonic() - t0 < 30  # not the timeout


def test_stopping_ends_the_group_children_included(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(120)\n"
    )
    with started([sys.executable, "-c", code], dict(os.environ), tmp_path / "log") as proc:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
    assert proc.returncode is not None
    deadline = time.monotonic() + 10
    while _alive(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived the stop"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
