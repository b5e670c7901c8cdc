"""examples/active_loop.py, the worked example of docs/client.md, runs against a real server
and does what it says: cycles, an oracle labelling each batch, exports."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import Live

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_worked_example_runs_the_loop(live: Live, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOLOOP_")}
    env |= {"PYTHONPATH": str(ROOT), "ANNOLOOP_URL": live.url, "ANNOLOOP_TOKEN": live.engineer}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "active_loop.py"),
            "--pool",
            "200",
            "--test",
            "60",
            "--batch",
            "10",
            "--cycles",
            "3",
            "--epochs",
            "2",
            "--name",
            "example",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "cycle 1: 20 labels" in out
    assert "cycle 2: 30 labels" in out
    assert "cycle 3: 40 labels" in out
    assert out.count("the oracle labelled 10 items") == 2
    rows = list(csv.DictReader((tmp_path / "example.csv").open()))
    assert len(rows) == 40 + 60  # pool items labelled, and the test split's truth
    tasks = json.loads((tmp_path / "example.labelstudio.json").read_text())
    assert len(tasks) == 100
    assert all(t["data"]["image"].startswith("data:image/png;base64,") for t in tasks)
