"""The blob store in S3-compatible object storage (AWS S3, MinIO, SeaweedFS, Ceph RGW, …).

Objects are named ``<prefix>/ab/cd/abcd…`` like the folder store's files. Credentials come
from boto3's usual sources (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile, an
instance role); none are ever part of the URL. Every upload carries its SHA-256, so the server
refuses bytes that do not match their name, and every download is hashed before it is used.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.core.blobs import BlobCorrupt, BlobNotFound, BlobStoreUnavailable, blob_key
from app.core.errors import InsufficientStorage

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_ALREADY_THERE = 412  # If-None-Match: * lost to an object with this name


class S3BlobStore:
    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str = "", region: str = ""
    ) -> None:
        if not bucket:
            raise ValueError("an S3 blob store needs a bucket: s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url, self.region = endpoint_url or None, region or None
        self._clients: dict[tuple[int, bool], Any] = {}
        self._lock = threading.Lock()
        self._conditional = True  # cleared if the server does not implement If-None-Match

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str = "", region: str = "") -> S3BlobStore:
        """``s3://bucket/prefix``; ``?endpoint_url=…&region=…`` win over the arguments."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(
            parts.netloc,
            parts.path,
            endpoint_url=query.get("endpoint_url", endpoint_url),
            region=query.get("region", region),
        )

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, sha256: str) -> str:
        return f"{self.prefix}/{blob_key(sha256)}" if self.prefix else blob_key(sha256)

    def put(self, data: bytes) -> str:
        raw = hashlib.sha256(data).digest()
        digest = raw.hex()
        args = {
            "Bucket": self.bucket,
            "Key": self.key(digest),
            "Body": data,
            "ChecksumSHA256": base64.b64encode(raw).decode(),
        }
        try:
            if self._conditional:
                # One round trip, and an existing blob is never rewritten (versioned buckets).
                self._client().put_object(**args, IfNoneMatch="*")
            else:
                self._client().put_object(**args)
        except ClientError as exc:
            status = _status(exc)
            if status == _ALREADY_THERE:
                return digest
            if status not in (409, 501):  # 409: a concurrent write of the same bytes
                raise self._failure(exc, "store a blob in") from exc
            self._conditional = self._conditional and status != 501
            try:
                self._client().put_object(**args)
            except (ClientError, BotoCoreError) as again:
                raise self._failure(again, "store a blob in") from again
        except BotoCoreError as exc:
            raise self._failure(exc, "store a blob in") from exc
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            body = self._client().get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"]
            data: bytes = body.read()
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise BlobNotFound(sha256, self.location) from None
            raise self._failure(exc, "read a blob from") from exc
        except BotoCoreError as exc:
            raise self._failure(exc, "read a blob from") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BlobCorrupt(f"blob {sha256} in {self.location} does not match its hash")
        return data

    def exists(self, sha256: str) -> bool:
        try:
            self._client().head_object(Bucket=self.bucket, Key=self.key(sha256))
            return True
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise self._failure(exc, "look up a blob in") from exc
        except BotoCoreError as exc:
            raise self._failure(exc, "look up a blob in") from exc

    def delete(self, sha256: str) -> None:
        try:  # S3 answers a missing key with success too
            self._client().delete_object(Bucket=self.bucket, Key=self.key(sha256))
        except (ClientError, BotoCoreError) as exc:
            raise self._failure(exc, "delete a blob from") from exc

    def check(self) -> None:
        try:
            self._client(quick=True).head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._failure(exc, "reach") from exc

    def ensure_bucket(self) -> bool:
        """Create the bucket unless it exists (``annoloop migrate``); True if it was made."""
        client = self._client()
        try:
            client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if _code(exc) not in _MISSING | {"NoSuchBucket"}:
                raise self._failure(exc, "reach") from exc
        except BotoCoreError as exc:
            raise self._failure(exc, "reach") from exc
        region = client.meta.region_name
        where = {"LocationConstraint": region} if region and region != "us-east-1" else None
        try:
            if where:
                client.create_bucket(Bucket=self.bucket, CreateBucketConfiguration=where)
            else:
                client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) == "BucketAlreadyOwnedByYou":  # another migrate won the race
                return False
            raise self._failure(exc, "create the bucket of") from exc
        except BotoCoreError as exc:
            raise self._failure(exc, "create the bucket of") from exc
        return True

    def _client(self, quick: bool = False) -> Any:
        # One client per process: a client made before a fork must not be used after it.
        key = (os.getpid(), quick)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key) or self._make_client(quick)
                self._clients[key] = client
        return client

    def _make_client(self, quick: bool) -> Any:
        config = Config(
            # S3-compatible servers answer path-style; virtual hosts need DNS per bucket.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            retries={"max_attempts": 1 if quick else 4, "mode": "standard"},
            connect_timeout=2 if quick else 10,
            read_timeout=2 if quick else 120,
            # Our own SHA-256 is the checksum; boto3's default CRC trailers are not understood
            # by every S3-compatible server.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )

    def _failure(self, exc: Exception, doing: str) -> Exception:
        if isinstance(exc, ClientError) and _status(exc) == 507:
            return InsufficientStorage(
                f"the blob store {self.location} is full; nothing was stored",
                code="storage_full",
            )
        return BlobStoreUnavailable(f"could not {doing} the blob store {self.location}: {exc}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
