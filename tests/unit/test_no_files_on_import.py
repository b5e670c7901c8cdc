"""Importing the Celery app (what the API, scripts and tests do to send tasks) creates no
folder in the current directory: the embedded setup's ``./annoloop-data`` appears only when
a worker starts or a blob is first written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["worker.celery_app", "app.main", "app.cli"])
def test_importing_creates_nothing_in_the_working_directory(tmp_path: Path, module: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOLOOP_")}
    env["PYTHONPATH"] = str(REPO)
    subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=tmp_path, env=env, check=True, timeout=120
    )
    assert list(tmp_path.iterdir()) == []


def test_the_first_blob_written_creates_its_folder(tmp_path: Path) -> None:
    from app.core.blobs import LocalBlobStore

    root = tmp_path / "annoloop-data" / "blobs"
    store = LocalBlobStore(root, durable=False)
    store.check()  # a folder not there yet is healthy
    assert not root.exists()
    digest = store.put(b"payload")
    assert store.get(digest) == b"payload"
    assert root.is_dir()
