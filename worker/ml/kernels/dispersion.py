"""Label dispersion (Bengar et al.): how often the model changed its mind about a pool item.

After every training epoch the model's argmax predictions on the whole unlabelled pool are
recorded (eval mode, no augmentation); dispersion(x) = 1 - f_x / T, where f_x is the number of
the T recorded epochs that predicted x's modal class.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import Tensor, nn

from worker.ml.device import resolve_device
from worker.ml.kernels._model_io import eval_mode, model_device, model_dtype, to_model_input


class Pool(Protocol):
    """What the recorder needs of the unlabelled pool: its size and its batches, in pool order."""

    def __len__(self) -> int: ...

    def batches(self) -> Iterable[Tensor]: ...


def _compact_dtype(num_classes: int) -> torch.dtype:
    if num_classes <= 256:
        return torch.uint8
    if num_classes <= 32768:
        return torch.int16
    return torch.int32


def dispersion_from_predictions(predictions: Tensor) -> Tensor:
    """Label dispersion from recorded predictions.

    Args:
        predictions: (T, N) integer class predictions, one row per recorded epoch, T ≥ 1.

    Returns:
        (N,) float32: 1 - f_x / T with f_x the count of the modal class (with several modal
        classes any of them gives the same f_x).
    """
    if predictions.dim() != 2:
        raise ValueError(f"predictions must be (T, N), got shape {tuple(predictions.shape)}")
    t = predictions.shape[0]
    if t == 0:
        raise ValueError("dispersion needs at least one recorded epoch")
    # Sort each item's T predictions; the modal count is then the longest run of equal values.
    # O(T·N) memory whatever the number of classes.
    s = predictions.to(torch.int64).sort(dim=0).values
    pos = torch.arange(t, device=s.device).unsqueeze(1).expand_as(s)
    new_run = torch.ones_like(s, dtype=torch.bool)
    new_run[1:] = s[1:] != s[:-1]
    run_start = torch.where(new_run, pos, torch.zeros_like(pos)).cummax(dim=0).values
    modal = (pos - run_start + 1).max(dim=0).values  # (N,)
    return 1.0 - modal.to(torch.float32) / t


class DispersionRecorder:
    """Epoch callback that records argmax predictions on the unlabelled pool.

    Args:
        pool: object with ``batches() -> Iterable[(b, *input_shape)]`` in pool order and
            ``__len__`` (N).
        num_classes: C; predictions are stored as uint8 when C ≤ 256 (int16 / int32 above).
        device: where to run the forward pass; None = where the model is.
    """

    def __init__(
        self, pool: Pool, num_classes: int, device: torch.device | str | None = None
    ) -> None:
        self.pool = pool
        self.num_classes = int(num_classes)
        self.device = None if device is None else resolve_device(device)
        self._dtype = _compact_dtype(self.num_classes)
        self._rows: list[Tensor] = []
        self.epochs: list[int] = []

    def __call__(self, epoch: int, model: nn.Module) -> None:
        """Record epoch ``epoch``'s (N,) predictions: one eval forward pass over the pool, no
        gradients; every module's train/eval flag is restored afterwards."""
        dev = model_device(model, self.device)
        dtype = model_dtype(model)
        preds: list[Tensor] = []
        with eval_mode(model), torch.no_grad():
            for batch in self.pool.batches():
                logits = model(to_model_input(batch, dev, dtype))
                preds.append(logits.argmax(dim=1).to("cpu", self._dtype))
        row = torch.cat(preds) if preds else torch.zeros(0, dtype=self._dtype)
        if row.shape[0] != len(self.pool):
            raise ValueError(f"pool yielded {row.shape[0]} items, expected {len(self.pool)}")
        self._rows.append(row)
        self.epochs.append(int(epoch))

    def predictions(self) -> Tensor:
        """(T, N) long: the recorded predictions, one row per recorded epoch."""
        if not self._rows:
            return torch.zeros((0, len(self.pool)), dtype=torch.long)
        return torch.stack(self._rows).to(torch.long)

    def scores(self) -> Tensor:
        """(N,) float32 dispersion over the recorded epochs (raises if none was recorded)."""
        return dispersion_from_predictions(self.predictions())
