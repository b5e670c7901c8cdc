"""Where tensors live: CUDA when the host has it, the CPU otherwise."""

from __future__ import annotations

import torch


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """Return ``device`` as a ``torch.device``; ``None`` picks CUDA when available."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
