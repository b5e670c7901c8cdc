"""What a model is: architecture name, input shape, class count and hyper-parameters.

A ``ModelSpec`` is stored with every cycle as JSON, so it must validate strictly and round-trip
through ``to_dict`` / ``from_dict`` unchanged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.ml.config import (
    ARCHITECTURE_KEYS,
    MAX_HIDDEN_LAYERS,
    MAX_HIDDEN_WIDTH,
    TrainConfig,
)

__all__ = [
    "ARCHITECTURE_KEYS",
    "MODEL_NAMES",
    "PRETRAINING_BACKBONE",
    "ModelSpec",
    "check_feature_name",
]

MODEL_NAMES: tuple[str, ...] = ("small_cnn", "resnet18", "mlp", "pretrained")


DEFAULT_DROPOUT: dict[str, float] = {
    "small_cnn": 0.5,
    "resnet18": 0.0,
    "mlp": 0.5,
    "pretrained": 0.0,
}
DEFAULT_HIDDEN_SIZES: tuple[int, ...] = (256, 128)

# small_cnn has two unpadded 5x5 convolutions, each followed by a 2x2 pool.
_SMALL_CNN_MIN_SIDE = 12
# ``hparams.init``: where the body's weights start. "pretraining": the project's latest
# finished self-supervised run of this architecture (``worker/ml/ssl.py``).
INITS: tuple[str, ...] = ("scratch", "pretraining")
# ``hparams.backbone`` of the pretrained model that names no operator's backbone but the
# project's latest finished pretraining run (a k-means encoder or a SimCLR body). Each cycle
# resolves it when created; the worker's copy of the spec then carries the run as
# ``hparams.pretraining = {"sha256": its checkpoint blob, "model": what it fitted}``.
PRETRAINING_BACKBONE = "pretraining"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture + hyper-parameters of one classifier.

    ``input_shape`` is the shape of one input without the batch dimension: ``(C, H, W)`` for the
    convolutional models, ``(D,)`` (or any shape, flattened) for the MLP.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    hparams: dict[str, Any] = field(default_factory=dict)
    # The named feature vector of each item the model takes (``item_feature.name``); None:
    # the item's own payload (its image, or its vector for a features-only project).
    input: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        """Build and validate a spec; any problem raises ``ValueError`` saying what is wrong."""
        if not isinstance(d, Mapping):
            raise ValueError(f"model spec must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {"name", "input_shape", "num_classes", "hparams", "input"}
        if unknown:
            raise ValueError(
                f"unknown model spec keys {sorted(unknown)}; "
                "valid keys are name, input_shape, num_classes, hparams, input"
            )
        for key in ("name", "input_shape", "num_classes"):
            if key not in d:
                raise ValueError(f"model spec is missing {key!r}")
        name = d["name"]
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model name {name!r}; valid names are {list(MODEL_NAMES)}")
        shape_in = d["input_shape"]
        if not isinstance(shape_in, list | tuple) or not shape_in:
            raise ValueError(f"input_shape must be a non-empty list of ints, got {shape_in!r}")
        if not all(_is_int(s) and s > 0 for s in shape_in):
            raise ValueError(f"input_shape must hold positive ints, got {shape_in!r}")
        input_shape = tuple(int(s) for s in shape_in)
        num_classes = d["num_classes"]
        if not _is_int(num_classes) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        hparams = d.get("hparams") or {}
        if not isinstance(hparams, Mapping) or not all(isinstance(k, str) for k in hparams):
            raise ValueError("hparams must be a mapping with string keys")
        try:
            # Normalise through JSON so a spec read back from the database compares equal.
            hparams = json.loads(json.dumps(dict(hparams), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"hparams must be JSON-serialisable: {exc}") from exc
        model_input = d.get("input")
        if model_input is not None:
            check_feature_name(model_input, "input")
        spec = cls(str(name), input_shape, int(num_classes), hparams, model_input)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Check shape/architecture compatibility and every hyper-parameter value."""
        self._validate_backbone()
        init = self.hparams.get("init", "scratch")
        if init not in INITS:
            raise ValueError(f"hparams.init must be one of {list(INITS)}, got {init!r}")
        if init == "pretraining" and self.name == "pretrained":
            raise ValueError("hparams.init: a pretrained backbone already has its weights")
        if self.name in ("small_cnn", "resnet18", "pretrained"):
            if len(self.input_shape) != 3:
                raise ValueError(
                    f"{self.name} needs input_shape (C, H, W), got {list(self.input_shape)}"
                )
            if self.name == "small_cnn" and min(self.input_shape[1:]) < _SMALL_CNN_MIN_SIDE:
                raise ValueError(
                    f"small_cnn needs H, W >= {_SMALL_CNN_MIN_SIDE}, got {list(self.input_shape)}"
                )
        dropout = self.hparams.get("dropout", DEFAULT_DROPOUT[self.name])
        if not _is_number(dropout) or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"hparams.dropout must be a number in [0, 1), got {dropout!r}")
        if "hidden_sizes" in self.hparams:
            if self.name != "mlp":
                raise ValueError("hparams.hidden_sizes only applies to the mlp model")
            hs = self.hparams["hidden_sizes"]
            if (
                not isinstance(hs, list | tuple)
                or not 0 < len(hs) <= MAX_HIDDEN_LAYERS
                or not all(_is_int(h) and 0 < h <= MAX_HIDDEN_WIDTH for h in hs)
            ):
                raise ValueError(
                    f"hparams.hidden_sizes must be 1 to {MAX_HIDDEN_LAYERS} ints in "
                    f"1..{MAX_HIDDEN_WIDTH}, got {hs!r}"
                )
        try:
            json.dumps(self.hparams, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"hparams must be JSON-serialisable: {exc}") from exc
        TrainConfig.from_hparams(self.hparams)

    def _validate_backbone(self) -> None:
        if self.name != "pretrained":
            for key in ("backbone", "frozen", "pretraining"):
                if key in self.hparams:
                    raise ValueError(f"hparams.{key} only applies to the pretrained model")
            return
        if "backbone" not in self.hparams:
            raise ValueError("the pretrained model needs hparams.backbone: a configured name")
        check_feature_name(self.hparams["backbone"], "hparams.backbone")
        self._validate_run()
        if not isinstance(self.hparams.get("frozen", True), bool):
            raise ValueError(
                f"hparams.frozen must be true or false, got {self.hparams['frozen']!r}"
            )
        if self.input is not None:
            raise ValueError("the pretrained model takes the items' images: no input key")
        # A pretraining run was fitted on the project's own images, of any channel count.
        channels_ok = self.backbone == PRETRAINING_BACKBONE or self.input_shape[0] == 3
        if len(self.input_shape) != 3 or not channels_ok:
            raise ValueError(
                f"pretrained needs input_shape (3, H, W), got {list(self.input_shape)}"
            )

    def _validate_run(self) -> None:
        run = self.hparams.get("pretraining")
        if run is None:
            return
        if self.hparams["backbone"] != PRETRAINING_BACKBONE:
            raise ValueError("hparams.pretraining only applies to backbone 'pretraining'")
        if (
            not isinstance(run, Mapping)
            or not isinstance(run.get("sha256"), str)
            or not _SHA256.fullmatch(run["sha256"])
            or not isinstance(run.get("model"), Mapping)
        ):
            raise ValueError(
                "hparams.pretraining must be {sha256: a checkpoint digest, model: a mapping}"
            )

    @property
    def backbone(self) -> str | None:
        """The configured backbone name (pretrained model), else None."""
        return str(self.hparams["backbone"]) if self.name == "pretrained" else None

    @property
    def pretraining_run(self) -> dict[str, Any] | None:
        """The resolved run of ``backbone = "pretraining"`` (the worker's spec), else None."""
        run = self.hparams.get("pretraining") if self.name == "pretrained" else None
        return dict(run) if run is not None else None

    @property
    def frozen(self) -> bool:
        """Pretrained model: the backbone stays as loaded and only the head trains."""
        return self.name == "pretrained" and bool(self.hparams.get("frozen", True))

    @property
    def init(self) -> str:
        """Where the body's weights start: "scratch" or "pretraining"."""
        return str(self.hparams.get("init", "scratch"))

    def body_key(self) -> dict[str, Any]:
        """What fixes the shapes of ``features``' weights (the head's class count does not):
        a pretraining checkpoint fits every spec with the same key."""
        key: dict[str, Any] = {"name": self.name, "input_shape": list(self.input_shape)}
        if self.name == "mlp":
            key["hidden_sizes"] = list(self.hidden_sizes)
        return key

    @property
    def dropout(self) -> float:
        """Dropout probability in front of the classification head."""
        return float(self.hparams.get("dropout", DEFAULT_DROPOUT[self.name]))

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """MLP hidden layer widths."""
        return tuple(int(h) for h in self.hparams.get("hidden_sizes", DEFAULT_HIDDEN_SIZES))

    @property
    def input_dim(self) -> int:
        """Values per item the model takes (a feature vector's length)."""
        return math.prod(self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; ``ModelSpec.from_dict(spec.to_dict()) == spec``."""
        out = {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "hparams": json.loads(json.dumps(self.hparams)),
        }
        if self.input is not None:
            out["input"] = self.input
        return out


FEATURE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def check_feature_name(name: Any, what: str = "feature name") -> str:
    """A feature vector's name: 1 to 64 of a-z 0-9 _ . - (starting with a letter or digit)."""
    if not isinstance(name, str) or not FEATURE_NAME.fullmatch(name):
        raise ValueError(
            f"{what} must be 1 to 64 characters of a-z, 0-9, '_', '.', '-' starting with a "
            f"letter or digit, got {name!r}"
        )
    return name


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
