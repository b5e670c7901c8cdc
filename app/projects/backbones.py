"""A project on a pretrained backbone is refused when it is configured if the backbone is not
configured here, or its weights file does not match its checksum or its architecture: a clear
422 now, not a failed cycle later. ``backbone: "pretraining"`` (the project's own pretraining
run) is checked when a cycle is created, as ``init: "pretraining"`` is."""

from __future__ import annotations

from typing import Any

from app.core.config import Settings
from app.core.errors import Unprocessable
from worker.ml.spec import PRETRAINING_BACKBONE

# (arch, sha256) pairs this process has loaded and found sound: checked once per process.
_VERIFIED: set[tuple[str, str]] = set()


def check_backbone(settings: Settings, model_spec: dict[str, Any]) -> None:
    if model_spec.get("name") != "pretrained":
        return
    hparams = model_spec.get("hparams") or {}
    if "pretraining" in hparams:
        raise Unprocessable(
            "model_spec.hparams.pretraining: set by each cycle (the run it resolved), not by "
            "the project",
            code="invalid_model_spec",
        )
    name = str(hparams.get("backbone"))
    if name == PRETRAINING_BACKBONE:
        return  # the project's own pretraining run, resolved (422 if none) by each cycle
    sources = settings.backbone_sources
    if name not in sources:
        raise Unprocessable(
            f"model_spec.hparams.backbone: no backbone named {name!r} is configured "
            f"(ANNOLOOP_BACKBONES names {sorted(sources) or 'none'})",
            code="unknown_backbone",
        )
    src = sources[name]
    if (src["arch"], src["sha256"]) in _VERIFIED:
        return
    # torch only here: the API loads the file once to check it, then never again.
    from worker.ml.backbones import BackboneError, BackboneSource, verify

    try:
        verify(
            BackboneSource(name, src["arch"], src["weights"], src["sha256"]),
            settings.backbone_cache,
        )
    except BackboneError as exc:
        raise Unprocessable(f"model_spec.hparams.backbone: {exc}", code=exc.code) from exc
    _VERIFIED.add((src["arch"], src["sha256"]))
