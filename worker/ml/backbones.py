"""Pretrained torchvision backbones from weights files that operators provide.

A deployment names its backbones (``ANNOLOOP_BACKBONES``): an architecture, a weights file (a
path or a URL) and the file's SHA-256. ``fetch_weights`` copies the file into a per-host cache
under its digest, checking the digest; ``load_backbone`` builds the architecture, loads the
whole state dict strictly (so a file of another architecture is refused, naming the keys that
do not fit) and drops the classification head: what remains maps (B, 3, H, W) images in [0, 1]
to (B, F) features, ImageNet-normalised inside.

A model spec uses one as ``{"name": "pretrained", "hparams": {"backbone": NAME, "frozen":
true|false}}``. Frozen, features never change for a checkpoint, so the pipeline computes them
once per item into the tensor cache (keyed by the weights' digest) and the model trained each
cycle is the head on those embeddings. Fine-tuned, the backbone trains with the head.

Plain torch + torchvision + the standard library: no web or database imports.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torchvision
from torch import Tensor, nn

# Architectures whose head can be dropped to leave pooled features: name -> (head attribute).
ARCHITECTURES: dict[str, str] = {
    "resnet18": "fc",
    "resnet34": "fc",
    "resnet50": "fc",
    "mobilenet_v3_small": "classifier",
    "mobilenet_v3_large": "classifier",
    "efficientnet_b0": "classifier",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(ValueError):
    """A weights file that cannot be used: unreachable, wrong digest, wrong architecture."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BackboneSource:
    """One configured backbone: architecture, where its weights are, their SHA-256."""

    name: str
    arch: str
    weights: str  # a path, file:// or http(s):// URL
    sha256: str


# What this process knows: name -> source, and the local copies of the weights.
_SOURCES: dict[str, BackboneSource] = {}
_CACHE_DIR: list[Path] = []


def configure(sources: dict[str, BackboneSource], cache_dir: Path) -> None:
    """Tell ``build_model`` (via ``backbone_for``) which backbones this process may load."""
    _SOURCES.clear()
    _SOURCES.update(sources)
    _CACHE_DIR[:] = [Path(cache_dir)]


def source(name: str) -> BackboneSource:
    if name not in _SOURCES:
        raise BackboneError(
            "unknown_backbone",
            f"no backbone named {name!r} is configured here (ANNOLOOP_BACKBONES names "
            f"{sorted(_SOURCES) or 'none'})",
        )
    return _SOURCES[name]


def fetch_weights(src: BackboneSource, cache_dir: Path | None = None) -> Path:
    """The weights file, copied into ``cache_dir`` under its digest (checked) on first use."""
    folder = Path(cache_dir) if cache_dir is not None else _CACHE_DIR[0]
    target = folder / f"{src.sha256}.pt"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_from(src.weights, out)
        digest = _sha256_file(Path(tmp))
        if digest != src.sha256:
            raise BackboneError(
                "backbone_checksum_mismatch",
                f"backbone {src.name!r}: the weights at {src.weights} have SHA-256 {digest}, "
                f"not the configured {src.sha256}",
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _copy_from(location: str, out: object) -> None:
    parts = urlsplit(location)
    try:
        if parts.scheme in ("http", "https"):
            with urllib.request.urlopen(location, timeout=60) as response:
                shutil.copyfileobj(response, out)  # type: ignore[arg-type]
            return
        path = Path(parts.path) if parts.scheme == "file" else Path(location)
        with path.open("rb") as fh:
            shutil.copyfileobj(fh, out)  # type: ignore[arg-type]
    except OSError as exc:
        raise BackboneError(
            "backbone_unavailable", f"the weights at {location} cannot be read: {exc}"
        ) from exc


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Backbone(nn.Module):
    """A torchvision network without its head: (B, 3, H, W) in [0, 1] -> (B, F)."""

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.net = net
        self.feature_dim = feature_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net((x - self.mean) / self.std)
        return out


def load_backbone(arch: str, weights: Path) -> Backbone:
    """``arch`` with the weights of ``weights`` (a torch state dict), head dropped.

    Raises ``BackboneError("backbone_arch_mismatch")`` when the file is not a state dict of
    ``arch`` (missing or unexpected keys, or shapes that differ).
    """
    if arch not in ARCHITECTURES:
        raise BackboneError(
            "unknown_architecture", f"architecture {arch!r} is not one of {sorted(ARCHITECTURES)}"
        )
    net = getattr(torchvision.models, arch)(weights=None)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torch pickle that is not a state dict, or not torch at all
        raise BackboneError(
            "backbone_arch_mismatch", f"the weights file is not a torch state dict: {exc}"
        ) from exc
    if not isinstance(state, dict):
        raise BackboneError("backbone_arch_mismatch", "the weights file is not a state dict")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n")[0:4]
        raise BackboneError(
            "backbone_arch_mismatch",
            f"the weights do not fit {arch}: {' '.join(s.strip() for s in first)}",
        ) from exc
    head = ARCHITECTURES[arch]
    old = getattr(net, head)
    linears = [m for m in old.modules() if isinstance(m, nn.Linear)] if head else []
    feature_dim = linears[0].in_features
    setattr(net, head, nn.Identity())
    return Backbone(net, feature_dim)


def backbone_for(name: str) -> tuple[Backbone, str]:
    """The configured backbone ``name`` loaded (a fresh copy: fine-tuning changes it), and its
    weights' SHA-256. The file is read once per process."""
    return copy.deepcopy(_template(name)), source(name).sha256


def describe(name: str) -> tuple[int, str]:
    """(feature size, weights' SHA-256) of the configured backbone ``name``, without a copy."""
    return _template(name).feature_dim, source(name).sha256


def _template(name: str) -> Backbone:
    src = source(name)
    key = (src.arch, src.sha256)
    if key not in _LOADED:
        _LOADED[key] = load_backbone(src.arch, fetch_weights(src)).eval()
    return _LOADED[key]


_LOADED: dict[tuple[str, str], Backbone] = {}


def verify(src: BackboneSource, cache_dir: Path) -> int:
    """Fetch, check the digest and load ``src`` once; returns its feature size. For the API,
    so a bad file is refused when a project is configured, not when its first cycle runs."""
    return load_backbone(src.arch, fetch_weights(src, cache_dir)).feature_dim


__all__ = [
    "ARCHITECTURES",
    "Backbone",
    "BackboneError",
    "BackboneSource",
    "backbone_for",
    "configure",
    "describe",
    "fetch_weights",
    "load_backbone",
    "verify",
]
