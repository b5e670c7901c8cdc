"""The benchmark's quick mode runs end to end: exactness, memory and structure checks pass
(its timings are only reported in this mode; the full run judges them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# About three minutes on 2 cores: out of ``make test-fast``, in ``make test``.
pytestmark = pytest.mark.slow


def test_bench_quick_passes_its_checks(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    figures = json.loads(out.read_text())
    assert figures
