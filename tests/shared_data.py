"""The real datasets some tests read (CIFAR-10H, MNIST): found beside the repository.

The project never needs them; the tests that use them fail with this message, not skip, when
they are missing, so a CI run without them cannot pass on fewer tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
_ROOTS = (
    os.environ.get("ANNOLOOP_SHARED_DATA", ""),
    str(REPO.parent / "shared" / "data"),
)


def load_shared(name: str) -> dict[str, np.ndarray]:
    for root in filter(None, _ROOTS):
        path = Path(root) / name
        if path.is_file():
            with np.load(path) as archive:
                return {key: archive[key] for key in archive.files}
    pytest.fail(
        f"{name} not found under any of {[r for r in _ROOTS if r]}; set ANNOLOOP_SHARED_DATA"
    )
