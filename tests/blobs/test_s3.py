"""What only the S3 store does: settings, integrity on both ends, and failures that name the
store instead of leaking a boto3 traceback."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.blob_cache import CachedBlobStore
from app.core.blob_s3 import S3BlobStore
from app.core.blobs import (
    BlobCorrupt,
    BlobStoreUnavailable,
    LocalBlobStore,
    blob_key,
    open_blob_store,
)
from app.core.config import Settings
from tests.blobs.conftest import Bucket
from tests.integration.processes import env_for, free_port


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(environment="test", data_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_the_default_is_the_folder_and_blob_dir_still_moves_it(tmp_path: Path) -> None:
    default = open_blob_store(_settings(tmp_path))
    assert isinstance(default, LocalBlobStore)
    assert default.root == tmp_path.resolve() / "blobs"
    moved = open_blob_store(_settings(tmp_path, blob_dir=tmp_path / "elsewhere"))
    assert isinstance(moved, LocalBlobStore)
    assert moved.root == tmp_path / "elsewhere"


def test_an_s3_url_picks_the_bucket_with_endpoint_and_region_from_settings_or_query(
    tmp_path: Path,
) -> None:
    s = _settings(
        tmp_path,
        blob_url="s3://annoloop/prod/blobs",
        s3_endpoint_url="http://minio:9000",
        s3_region="eu-west-1",
    )
    store = open_blob_store(s)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.location) == (
        "annoloop",
        "prod/blobs",
        "s3://annoloop/prod/blobs",
    )
    assert (store.endpoint_url, store.region) == ("http://minio:9000", "eu-west-1")
    q = _settings(tmp_path, blob_url="s3://b1x?endpoint_url=http://seaweed:8333&region=x-1")
    store = open_blob_store(q)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.endpoint_url, store.region) == (
        "b1x",
        "",
        "http://seaweed:8333",
        "x-1",
    )


def test_a_worker_reads_s3_through_its_local_copy_unless_told_not_to(tmp_path: Path) -> None:
    s = _settings(tmp_path, blob_url="s3://annoloop")
    cached = open_blob_store(s, cache=True)
    assert isinstance(cached, CachedBlobStore)
    assert cached.cache.root == tmp_path.resolve() / "blob-cache"
    assert isinstance(open_blob_store(s), S3BlobStore)  # the API: no copy
    off = _settings(tmp_path, blob_url="s3://annoloop", blob_cache_bytes=0)
    assert isinstance(open_blob_store(off, cache=True), S3BlobStore)


@pytest.mark.parametrize("url", ["gs://bucket", "s3://", "/var/lib/blobs", "file:///x"])
def test_a_blob_url_that_is_not_s3_is_refused_at_startup(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValidationError, match="ANNOLOOP_BLOB_URL"):
        _settings(tmp_path, blob_url=url)


def test_a_blob_url_leaves_no_local_blob_folder(tmp_path: Path) -> None:
    _settings(tmp_path, blob_url="s3://annoloop").ensure_dirs()
    assert not (tmp_path / "blobs").exists()


def test_an_object_that_does_not_match_its_name_is_never_returned(bucket: Bucket) -> None:
    store = bucket.store("p")
    sha = hashlib.sha256(b"what was stored").hexdigest()
    bucket.server.client().put_object(Bucket=bucket.name, Key=store.key(sha), Body=b"tampered")
    with pytest.raises(BlobCorrupt, match=sha):
        store.get(sha)


def test_the_server_refuses_an_upload_whose_bytes_do_not_match_the_sent_sha256(
    bucket: Bucket,
) -> None:
    """The checksum the store sends with each upload is checked by this server, not ignored."""
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(Exception, match=r"BadDigest|InvalidRequest|XAmzContentChecksumMismatch"):
        bucket.server.client().put_object(
            Bucket=bucket.name, Key=blob_key("a" * 64), Body=b"data", ChecksumSHA256=wrong
        )
    assert bucket.objects() == []


def test_an_existing_blob_is_not_rewritten(bucket: Bucket) -> None:
    store = bucket.store()
    sha = store.put(b"once")
    client = bucket.server.client()
    first = client.head_object(Bucket=bucket.name, Key=store.key(sha))["LastModified"]
    time.sleep(1.1)  # LastModified has one-second resolution
    assert store.put(b"once") == sha
    assert client.head_object(Bucket=bucket.name, Key=store.key(sha))["LastModified"] == first


def test_wrong_credentials_name_the_store(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = bucket.store("p")
    with pytest.raises(BlobStoreUnavailable, match=f"s3://{bucket.name}/p") as caught:
        store.put(b"x")
    assert caught.value.status_code == 503
    with pytest.raises(BlobStoreUnavailable):
        store.check()


def test_a_missing_bucket_fails_the_check(bucket: Bucket) -> None:
    store = S3BlobStore("no-such-bucket-here", endpoint_url=bucket.server.endpoint)
    with pytest.raises(BlobStoreUnavailable, match="no-such-bucket-here"):
        store.check()


def test_an_unreachable_endpoint_fails_fast_and_clearly(bucket: Bucket) -> None:
    store = S3BlobStore("annoloop", endpoint_url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(BlobStoreUnavailable, match="s3://annoloop"):
        store.check()
    assert time.monotonic() - started < 5  # /healthz must not hang on it
    with pytest.raises(BlobStoreUnavailable, match="could not read a blob from"):
        store.get("0" * 64)


def test_annoloop_migrate_creates_the_bucket_once(bucket: Bucket, tmp_path: Path) -> None:
    name = f"made-{bucket.name}"
    env = env_for(
        {
            "ANNOLOOP_DATA_DIR": str(tmp_path),
            "ANNOLOOP_BLOB_URL": f"s3://{name}/blobs",
            **bucket.server.env(),
        }
    )
    runs = [
        subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert f"created the bucket {name}" in runs[0].stdout
    assert "created" not in runs[1].stdout
    S3BlobStore(name, endpoint_url=bucket.server.endpoint).check()
