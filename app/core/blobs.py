"""A content-addressed blob store in a local folder: item payloads, checkpoints, score arrays.

Blobs are named by the SHA-256 of their bytes and written through a temporary file and an
atomic rename, so a crash never leaves a half-written blob under a valid name and writing
the same content twice is harmless.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

from app.core.errors import InsufficientStorage

# Out of space or over quota: the caller's request is refused, nothing else is wrong.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

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
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()


def _refuse_if_full(exc: OSError) -> None:
    """A full disk becomes a 507 the client can act on; any other OSError goes on as is."""
    if exc.errno in _FULL:
        raise InsufficientStorage(
            "the blob store is out of disk space; nothing was stored", code="storage_full"
        ) from exc
