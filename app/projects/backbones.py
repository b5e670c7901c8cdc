"""A project on a pretrained backbone is refused when it is configured if the backbone is not
configured here, or its weights file does not match its checksum or its architecture: a clear
422 now, not a failed cycle later."""

from __future__ import annotations

from typing import Any

from app.core.config import Settings
from app.core.errors import Unprocessable

# (arch, sha256) pairs this process has loaded and found sound: checked once per process.
_VERIFIED: set[tuple[str, str]] = set()


def check_backbone(settings: Settings, model_spec: dict[str, Any]) -> None:
    if model_spec.get("name") != "pretrained":
        return
    name = str(model_spec.get("hparams", {}).get("backbone"))
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
