"""The k-center kernel's peak memory, measured in a process of its own (``worker.bench`` runs
it): peak RSS growth across one call sees every allocation torch makes on the CPU, which
tracemalloc does not, and a fresh process carries no peak from earlier work.

    python -m worker.bench_memory N D B THREADS

Prints one JSON line: ``delta_kib``, ``seconds``, ``picked``, ``method``, ``features_mib``.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
from pathlib import Path

import torch

from worker.ml.kernels.kcenter import greedy_k_center

# Linux only: writing 5 here resets the peak-RSS mark (VmHWM) to the current RSS.
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_kib(key: str) -> int:
    found = re.search(key + r":\s+(\d+)", _STATUS.read_text())
    if found is None:
        raise OSError(f"{key} not in {_STATUS}")
    return int(found.group(1))


def measure(n: int, d: int, b: int) -> dict[str, object]:
    """Peak RSS increase (KiB) and seconds of ``greedy_k_center`` picking ``b`` of ``n``
    random ``d``-dimensional points; the points exist before the call."""
    x = torch.randn((n, d), generator=torch.Generator().manual_seed(0))
    greedy_k_center(x[:64], 4)  # warm-up: lazy initialisation is not the kernel's memory
    try:
        _CLEAR_REFS.write_text("5")
        method = "VmHWM after - VmRSS before (peak reset via clear_refs)"
        before = _status_kib("VmRSS")
    except OSError:
        # Elsewhere the ru_maxrss delta can under-count: a peak reached before the call
        # hides the call's own.
        method = "ru_maxrss delta"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    picked = greedy_k_center(x, b)
    seconds = time.perf_counter() - t
    if method.startswith("VmHWM"):
        after = _status_kib("VmHWM")
    else:
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "delta_kib": after - before,
        "seconds": seconds,
        "picked": int(picked.numel()),
        "method": method,
        "features_mib": x.numel() * 4 / 2**20,
    }


def main(argv: list[str]) -> None:
    n, d, b, threads = (int(v) for v in argv)
    torch.set_num_threads(threads)
    print(json.dumps(measure(n, d, b)))


if __name__ == "__main__":
    main(sys.argv[1:])
