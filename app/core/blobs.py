"""Content-addressed blob storage: item payloads, checkpoints, score arrays.

Blobs are named by the SHA-256 of their bytes, so a name never changes meaning: writing the
same content twice is harmless, a copy anywhere can be checked against its name, and readers
may cache forever. Two stores share one interface (:class:`BlobStore`): a local folder, the
embedded default, and S3-compatible object storage (``app/core/blob_s3.py``), which a worker on
another host reaches with nothing but its URL. ``ANNOLOOP_BLOB_URL`` picks one
(:func:`open_blob_store`). Both lay blobs out as ``ab/cd/abcd…``, so a folder copied into a
bucket with any tool is already a valid store.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from app.core.errors import InsufficientStorage, ServiceUnavailable

if TYPE_CHECKING:
    from app.core.config import Settings

# Out of space or over quota: the caller's request is refused, nothing else is wrong.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_HEX = frozenset("0123456789abcdef")


class BlobNotFound(FileNotFoundError):
    """No blob by that name in the store (an OSError, so readers that tolerate a missing
    artefact keep doing so)."""

    def __init__(self, sha256: str, location: str) -> None:
        super().__init__(f"blob {sha256} is not in the blob store {location}")
        self.sha256 = sha256


class BlobCorrupt(ValueError):
    """The bytes stored under a name do not hash to it."""


class BlobStoreUnavailable(ServiceUnavailable):
    code = "blob_store_unavailable"


class BlobStore(Protocol):
    """What the API and the workers need from a blob store."""

    @property
    def location(self) -> str:
        """Where the blobs are, for messages: ``file:///…`` or ``s3://bucket/prefix``."""
        ...

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its SHA-256 hex digest."""
        ...

    def get(self, sha256: str) -> bytes:
        """The blob's bytes; :class:`BlobNotFound` if it is not there."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def delete(self, sha256: str) -> None:
        """Remove the blob (a missing one is no error). A name may be shared by every writer
        of the same bytes: the caller deletes only a blob nothing references any more."""
        ...

    def check(self) -> None:
        """Cheap reachability check for /healthz; raises :class:`BlobStoreUnavailable`."""
        ...


def blob_key(sha256: str) -> str:
    """The relative name of a blob in every store: ``ab/cd/abcd…``."""
    if len(sha256) != 64 or not _HEX.issuperset(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


class LocalBlobStore:
    """Blobs in a folder, written through a temporary file and an atomic rename, so a crash
    never leaves a half-written blob under a valid name.

    ``durable=False`` skips the fsync: for a cache whose reader checks every hash anyway."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable

    @property
    def location(self) -> str:
        return self.root.resolve().as_uri()

    def path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        except OSError as exc:
            _refuse_if_full(exc)
            raise
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if self.durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                _refuse_if_full(exc)
            raise
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(sha256, self.location) from None

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def check(self) -> None:
        # A folder that is not there yet is fine: the first put creates it.
        if self.root.exists() and not (self.root.is_dir() and os.access(self.root, os.W_OK)):
            raise BlobStoreUnavailable(f"the blob folder {self.root} is not a writable folder")

    def digests(self) -> Iterator[str]:
        """Every blob name in the folder (temporary files and strays left out)."""
        # One folder at a time: a million blobs are never listed at once.
        for folder in sorted(self.root.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]")):
            for path in sorted(folder.iterdir()):
                if len(path.name) == 64 and _HEX.issuperset(path.name) and path.is_file():
                    yield path.name


def open_blob_store(settings: Settings, *, cache: bool = False) -> BlobStore:
    """The store ``settings`` name. ``cache``: a worker's reads of remote blobs go through a
    local copy (``blob_cache_dir``), since training reads every item once per epoch."""
    if not settings.blob_url:
        return LocalBlobStore(settings.blobs)
    return store_for_url(settings.blob_url, settings, cache=cache)


def store_for_url(url: str, settings: Settings | None = None, *, cache: bool = False) -> BlobStore:
    """``file:///folder`` (or a bare path) or ``s3://bucket/prefix?endpoint_url=…&region=…``."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return LocalBlobStore(Path(parts.path if parts.scheme else url))
    if parts.scheme != "s3":
        raise ValueError(f"unsupported blob store URL {url!r}: use s3://bucket/prefix or a folder")
    from app.core.blob_s3 import S3BlobStore  # boto3 only where S3 is used

    store = S3BlobStore.from_url(
        url,
        endpoint_url=settings.s3_endpoint_url if settings else "",
        region=settings.s3_region if settings else "",
    )
    if not (cache and settings and settings.blob_cache_bytes > 0):
        return store
    from app.core.blob_cache import CachedBlobStore

    return CachedBlobStore(store, settings.blob_cache, settings.blob_cache_bytes)


def _refuse_if_full(exc: OSError) -> None:
    """A full disk becomes a 507 the client can act on; any other OSError goes on as is."""
    if exc.errno in _FULL:
        raise InsufficientStorage(
            "the blob store is out of disk space; nothing was stored", code="storage_full"
        ) from exc
