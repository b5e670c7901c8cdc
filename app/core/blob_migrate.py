"""``annoloop blobs migrate``: copy a blob folder into another store (an S3 bucket, usually).

Every blob is hashed before it is sent, so a damaged file is reported, never copied; S3
checks the SHA-256 that goes with each upload. Blobs the target already has are left alone, so
an interrupted run is resumed by running it again. The folder is not touched: delete it once
the services run with the new ``ANNOLOOP_BLOB_URL``.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from app.core.blobs import BlobStore, LocalBlobStore

COPIED, PRESENT, CORRUPT, FAILED = "copied", "already there", "damaged in the folder", "failed"


def migrate(
    source: LocalBlobStore,
    target: BlobStore,
    *,
    verify: bool = False,
    jobs: int = 8,
    say: Callable[[str], None] = print,
) -> Counter[str]:
    """Copy every blob of ``source`` into ``target``; ``verify``: read each back from
    ``target`` and check its hash. Returns how many blobs ended up in which outcome."""

    def one(sha256: str) -> str:
        data = source.get(sha256)
        if hashlib.sha256(data).hexdigest() != sha256:
            print(f"{sha256}: the file does not match its name; not copied", file=sys.stderr)
            return CORRUPT
        outcome = PRESENT if target.exists(sha256) else COPIED
        if outcome == COPIED:
            target.put(data)
        if verify and hashlib.sha256(target.get(sha256)).hexdigest() != sha256:
            raise ValueError(f"the copy in {target.location} does not match its name")
        return outcome

    counts: Counter[str] = Counter()
    pending: dict[Future[str], str] = {}

    def settle(done: set[Future[str]]) -> None:
        for future in done:
            sha256 = pending.pop(future)
            try:
                counts[future.result()] += 1
            except Exception as exc:
                print(f"{sha256}: {exc}", file=sys.stderr)
                counts[FAILED] += 1
            if counts.total() % 1000 == 0:
                say(f"{counts.total()} blobs done")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for sha256 in source.digests():  # a bounded window: the folder is never listed whole
            if len(pending) >= jobs * 4:
                settle(wait(pending, return_when=FIRST_COMPLETED).done)
            pending[pool.submit(one, sha256)] = sha256
        settle(wait(pending).done)
    say(
        f"{counts.total()} blobs from {source.location} to {target.location}: "
        + ", ".join(f"{counts[k]} {k}" for k in (COPIED, PRESENT, CORRUPT, FAILED))
    )
    return counts
