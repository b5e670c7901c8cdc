"""Training a cycle's network with CEAL's pseudo-labels when the cycle asks for them.

``params["ceal"]`` (any acquisition strategy) turns on ``worker.ml.ceal.fit``: train on the
labelled items, pseudo-label the confident candidates, fine-tune on both. The pseudo-labels
are stored as an artefact blob (item ids, classes, entropies, the threshold) and summarised on
the cycle (``metrics["pseudo_labels"]``, or per member for an ensemble); they are never written
as annotations, so they never count as votes, labels or spent budget. BGADL's generated samples
(``worker.ml.bgadl``) take the same path: trained on with the labelled items, stored as a blob
and summarised in ``metrics["generated"]``, never items of the pool.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.ml import bgadl
from worker.ml.ceal import Augment, fit, options_of, record
from worker.ml.data import PoolSource
from worker.ml.spec import ModelSpec
from worker.ml.training import (
    EpochCallback,
    Objective,
    PauseCheck,
    TrainConfig,
    TrainResult,
    TrainState,
)
from worker.pipeline import cancel
from worker.pipeline.common import dataset_of
from worker.pipeline.runtime import Runtime
from worker.pipeline.snapshot import CycleInputs, ItemRefs


def train_cycle_network(
    rt: Runtime,
    inputs: CycleInputs,
    model: nn.Module,
    *,
    seed: int,
    candidates: PoolSource,
    watch: cancel.CycleWatch,
    device: torch.device,
    epoch_callback: EpochCallback | None = None,
    objective: Objective | None = None,
    pause: PauseCheck | None = None,
    resume: TrainState | None = None,
    augment: Augment | None = None,
) -> tuple[list[TrainResult], dict[str, Any] | None]:
    """Train ``model`` in place on the cycle's labelled items (with CEAL if asked); returns
    the training results and the pseudo-label summary (None without CEAL).
    ``candidates``: the cycle's unlabelled candidates, in ``inputs.candidates`` order.
    ``pause``/``resume``: as ``train``'s, for the first (or only) stage. ``augment``: BGADL's
    generator of extra training items (record them with ``record_generated``)."""
    spec = ModelSpec.from_dict(inputs.model_spec)
    labelled = watch.guard(dataset_of(rt, inputs.labelled, spec, inputs.training_targets()))

    def pseudo_dataset(positions: np.ndarray, targets: np.ndarray) -> Any:
        refs = inputs.candidates
        chosen = ItemRefs(
            ids=[refs.ids[int(i)] for i in positions],
            hashes=[refs.hashes[int(i)] for i in positions],
            media_types=[refs.media_types[int(i)] for i in positions],
        )
        return watch.guard(dataset_of(rt, chosen, spec, targets))

    results, pseudo = fit(
        model,
        labelled,
        TrainConfig.from_hparams(spec.hparams),
        seed=seed,
        options=options_of(inputs.params),
        cycle_index=inputs.number - 1,
        candidates=candidates,
        pseudo_dataset=pseudo_dataset,
        device=device,
        epoch_callback=epoch_callback,
        objective=objective,
        pause=pause,
        resume=resume,
        augment=augment,
    )
    if pseudo is None:
        return results, None
    buf = io.BytesIO()
    np.savez_compressed(buf, **record(pseudo, np.asarray(inputs.candidates.ids)))  # type: ignore[arg-type]
    return results, {
        "delta": pseudo.delta,
        "count": len(pseudo),
        "per_class": np.bincount(pseudo.classes, minlength=int(inputs.counts.shape[1])).tolist(),
        "sha256": rt.blobs.put(buf.getvalue()),
    }


LOSS_NAMES = ("encoder", "generator", "discriminator", "classifier")  # the last two: ACGAN


def record_generated(
    rt: Runtime, inputs: CycleInputs, augmenter: bgadl.Augmenter
) -> dict[str, Any] | None:
    """Store a cycle's generated samples (BGADL) as a blob: the generated inputs with their
    source items' ids and targets; returns the summary for ``metrics["generated"]`` (None when
    nothing was generated). They are training data of this cycle only, never pool items."""
    generated = augmenter.generated
    if generated is None:
        return None
    buf = io.BytesIO()
    np.savez_compressed(buf, **bgadl.record(generated, np.asarray(inputs.labelled.ids)))  # type: ignore[arg-type]
    return {
        "count": len(generated),
        "per_class": np.bincount(
            generated.targets.argmax(axis=1), minlength=int(inputs.counts.shape[1])
        ).tolist(),
        "from_noise": int(generated.from_noise.sum()),
        "losses": dict(zip(LOSS_NAMES, generated.losses, strict=False)),
        "sha256": rt.blobs.put(buf.getvalue()),
    }
