"""The blob store's disk is full: uploads are refused with 507 ``storage_full``, the database
is left as it was, no partial blob stays behind, and uploads work again once space is back.

The disk is a real 1 MiB tmpfs mounted for the test (we run as root in CI). Where mounting
is not permitted, the test falls back to an ``ENOSPC`` injected at the blob store's fsync
and says so in its output; the rest of the path (mapping, rollback) is the same.
"""

from __future__ import annotations

import errno
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from tests.api.helpers import create_project, png_bytes
from tests.conftest import Accounts, row_counts

FILLER = "filler"


class SmallDisk:
    def __init__(self, root: Path, mounted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.mounted, self.monkeypatch = root, mounted, monkeypatch

    def fill(self) -> None:
        if not self.mounted:
            self.monkeypatch.setattr("app.core.blobs.os.fsync", _no_space)
            return
        chunk = b"\0" * 65536
        fd = os.open(self.root / FILLER, os.O_WRONLY | os.O_CREAT)  # unbuffered: no leftovers
        try:
            while True:
                os.write(fd, chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def free(self) -> None:
        if not self.mounted:
            self.monkeypatch.undo()
            return
        (self.root / FILLER).unlink()

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


def _no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device (injected)")


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    root = tmp_path / "blobs"
    root.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)]
    try:
        mounted = subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:  # no mount binary
        mounted = False
    if not mounted:
        print("mounting a tmpfs is not permitted here: injecting ENOSPC instead")
    try:
        yield SmallDisk(root, mounted, monkeypatch)
    finally:
        if mounted:
            subprocess.run(["umount", str(root)], check=True)


@pytest.fixture
def settings(tmp_path: Path, disk: SmallDisk) -> Settings:
    """Overrides the conftest fixture: blobs go to the small disk."""
    return Settings(environment="test", data_dir=tmp_path / "data", blob_dir=disk.root)


def _npz(n: int) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    np.savez(buf, images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    return buf.getvalue()


def test_a_full_blob_store_refuses_uploads_and_changes_nothing(
    app_client: TestClient,
    accounts: Accounts,
    factory: sessionmaker[Session],
    disk: SmallDisk,
) -> None:
    pid = create_project(app_client, accounts)["id"]
    h = accounts.h("engineer")
    one: dict[str, Any] = {"files": {"file": ("a.png", png_bytes(7), "image/png")}}
    bulk: dict[str, Any] = {"files": {"archive": ("a.npz", _npz(20), "application/octet-stream")}}
    disk.fill()
    before, files_before = row_counts(factory), disk.files()

    for url, upload in (
        (f"/api/v1/projects/{pid}/items", one),
        (f"/api/v1/projects/{pid}/items:bulk", bulk),
    ):
        r = app_client.post(url, headers=h, **upload)
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "storage_full"
        assert "disk space" in r.json()["error"]["message"]

    assert row_counts(factory) == before
    assert disk.files() == files_before  # no half-written blob, no temporary file
    disk.free()
    r = app_client.post(f"/api/v1/projects/{pid}/items", headers=h, **one)
    assert r.status_code == 201, r.text
