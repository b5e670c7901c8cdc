"""Small helpers the kernels share: where a model runs and how a pool batch gets there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from worker.ml.device import resolve_device


def model_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """The device to run ``model`` on, moving the model there if ``device`` names another one.

    ``device`` None means "where the model already is" (CPU for a model without tensors).
    """
    tensors = [*model.parameters(), *model.buffers()]
    if device is None:
        return tensors[0].device if tensors else torch.device("cpu")
    target = resolve_device(device)
    if any(t.device != target for t in tensors):
        model.to(target)
    return target


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def to_model_input(x: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Move a pool batch (b, *input_shape) to ``device``; floating inputs take the model dtype."""
    if x.is_floating_point():
        return x.to(device=device, dtype=dtype, non_blocking=True)
    return x.to(device=device, non_blocking=True)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in eval mode; restore each module's own flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
