"""Peak memory of the API process for the worst bulk upload: an npz of zeros (issue 15).

    .venv/bin/python scripts/bench_upload_memory.py                 # as many rows as allowed
    .venv/bin/python scripts/bench_upload_memory.py --rows 60000 --rows 10000

Starts ``annoloop api`` (SQLite) in a temporary folder, uploads npz files of 28x28 uint8
zeros with distinct external ids (the zeros compress about 1000x, so the archive is tiny),
and prints, per upload, the status, the archive's size, and the API process's resident
memory before and after and its peak (``VmHWM`` in /proc/<pid>/status; a fresh API per
upload, so each peak is its own).
Without ``--rows`` it uploads ``ANNOLOOP_MAX_BULK_ITEMS`` rows and one more.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_load_setup import _accounts, _env, workdir

from app.cli import migrate
from app.core.config import Settings
from app.core.db import make_engine
from app.core.processes import cli, free_port, started, wait_healthy


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _npz(rows: int, side: int) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        images=np.zeros((rows, side, side), np.uint8),
        # Distinct ids: the zeros are one blob, and items without ids would be refused as
        # duplicates (an id defaults to the payload's digest).
        external_ids=np.array([f"z{i}" for i in range(rows)]),
    )
    return buf.getvalue()


def measure(rows: int, side: int, tmp: Path) -> None:
    data = tmp / f"data-{rows}"
    db_url = f"sqlite:///{data.resolve() / 'annoloop.sqlite'}"
    data.mkdir()
    migrate(db_url)
    engine = make_engine(db_url)
    admin, _ = _accounts(engine, 0)
    engine.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / f"api-{rows}.log"
    env = _env({"ANNOLOOP_DATA_DIR": str(data), "ANNOLOOP_DATABASE_URL": db_url})
    with started(cli("api", "--port", str(port)), env, log) as proc:
        wait_healthy(base, proc, log, 90)
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=1800
        ) as http:
            r = http.post(
                "/api/v1/projects",
                json={
                    "name": f"mem-{uuid.uuid4().hex[:6]}",
                    "classes": ["a", "b"],
                    "model_spec": {"name": "small_cnn", "input_shape": [1, side, side]},
                },
            )
            r.raise_for_status()
            pid = r.json()["id"]
            archive = _npz(rows, side)
            before = _status_kb(proc.pid, "VmRSS")
            t0 = time.monotonic()
            r = http.post(
                f"/api/v1/projects/{pid}/items:bulk",
                files={"archive": ("zeros.npz", archive, "application/octet-stream")},
            )
            took = time.monotonic() - t0
            stored = http.get(f"/api/v1/projects/{pid}/items", params={"limit": 1}).json()
            peak, after = _status_kb(proc.pid, "VmHWM"), _status_kb(proc.pid, "VmRSS")
    answer = r.json()["created"] if r.status_code == 201 else r.json()["error"]["code"]
    print(
        f"{rows:>7,} rows of {side}x{side} zeros, npz {len(archive) / 1024:7.0f} KiB: "
        f"{r.status_code} {answer} in {took:5.1f} s; RSS before {before / 1024:6.0f} MiB, "
        f"peak {peak / 1024:6.0f} MiB, after {after / 1024:6.0f} MiB; "
        f"items stored: {'some' if stored['items'] else 'none'}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="rows per upload (repeat)")
    parser.add_argument("--side", type=int, default=28, help="image side in pixels")
    args = parser.parse_args(argv)
    limit = getattr(Settings(), "max_bulk_items", 250_000)
    for rows in args.rows or [limit, limit + 1]:
        with workdir() as tmp:
            measure(rows, args.side, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
