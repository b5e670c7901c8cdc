"""``annoloop blobs migrate``: a folder into a bucket, checked, resumable, with counts."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from app.core.blobs import LocalBlobStore, blob_key
from tests.blobs.conftest import Bucket
from tests.integration.processes import env_for


def _folder(root: Path, n: int) -> tuple[LocalBlobStore, list[str]]:
    store = LocalBlobStore(root)
    return store, sorted(store.put(os.urandom(100 + i)) for i in range(n))


def _migrate(bucket: Bucket, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = env_for({"ANNOLOOP_BLOB_DIR": str(folder), **bucket.server.env()})
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "blobs", "migrate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_folder_moves_into_the_bucket_and_a_rerun_copies_nothing(
    bucket: Bucket, tmp_path: Path
) -> None:
    folder, shas = _folder(tmp_path / "blobs", 25)
    (folder.root / shas[0][:2] / shas[0][2:4] / ".tmp-leftover").write_bytes(b"half")
    url = bucket.url("annoloop/blobs")
    done = _migrate(bucket, folder.root, "--to", url)
    assert done.returncode == 0, done.stderr
    assert "25 blobs" in done.stdout
    assert "25 copied, 0 already there, 0 damaged in the folder, 0 failed" in done.stdout
    assert bucket.objects() == sorted(f"annoloop/blobs/{blob_key(s)}" for s in shas)
    target = bucket.store("annoloop/blobs")
    assert all(target.get(s) == folder.get(s) for s in shas)

    again = _migrate(bucket, folder.root, "--to", url, "--verify")
    assert again.returncode == 0, again.stderr
    assert "0 copied, 25 already there" in again.stdout


def test_an_interrupted_run_is_finished_by_the_next(bucket: Bucket, tmp_path: Path) -> None:
    folder, shas = _folder(tmp_path / "blobs", 10)
    target = bucket.store("p")
    for sha in shas[:4]:  # what the interrupted run got done
        target.put(folder.get(sha))
    done = _migrate(bucket, folder.root, "--to", bucket.url("p"))
    assert done.returncode == 0, done.stderr
    assert "6 copied, 4 already there" in done.stdout
    assert len(bucket.objects()) == 10


def test_a_damaged_file_is_reported_not_copied_and_fails_the_run(
    bucket: Bucket, tmp_path: Path
) -> None:
    folder, shas = _folder(tmp_path / "blobs", 5)
    folder.path(shas[2]).write_bytes(b"bit rot")
    done = _migrate(bucket, folder.root, "--to", bucket.url())
    assert done.returncode == 1
    assert "4 copied, 0 already there, 1 damaged in the folder, 0 failed" in done.stdout
    assert shas[2] in done.stderr
    assert blob_key(shas[2]) not in bucket.objects()


def test_the_target_defaults_to_the_configured_blob_url(bucket: Bucket, tmp_path: Path) -> None:
    folder, shas = _folder(tmp_path / "blobs", 3)
    env = env_for(
        {
            "ANNOLOOP_BLOB_DIR": str(folder.root),
            "ANNOLOOP_BLOB_URL": bucket.url("configured"),
            **bucket.server.env(),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "blobs", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert bucket.objects() == sorted(f"configured/{blob_key(s)}" for s in shas)


def test_a_folder_can_be_the_target_too(tmp_path: Path) -> None:
    from app.core.blob_migrate import migrate

    folder, shas = _folder(tmp_path / "old", 4)
    new = LocalBlobStore(tmp_path / "new")
    counts = migrate(folder, new, verify=True, say=lambda _: None)
    assert counts["copied"] == 4
    assert all(hashlib.sha256(new.get(s)).hexdigest() == s for s in shas)


def test_without_a_target_it_says_what_to_give(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "blobs", "migrate"],
        env=env_for({"ANNOLOOP_DATA_DIR": str(tmp_path)}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "--to s3://bucket/prefix" in done.stderr
