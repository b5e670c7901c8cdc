"""Each strategy's parameters: names, types, defaults and caps, declared once and torch-free.

This is the one list of strategy names: the API accepts these (``app/cycles/strategies.py``),
serves them with their parameters (``GET /strategies``, which the dashboard reads), and a test
holds the worker's registry equal to it. What a strategy needs of the project's model
(``NEEDS``) is checked here too, so a cycle the worker could not run is refused when it is
created, with the reason.

The API checks a project's ``strategy_params`` and a cycle's ``params`` with these models (422
naming the key) and the worker's ``get_strategy`` validates with the very same ones, so what the
worker would refuse when the cycle runs is refused before anything is stored. A test holds every
registered strategy's constructor (names and defaults) equal to its model here.

Caps keep one request from holding a worker for days (``num_samples: 10**9`` noisy copies of the
model per candidate) or allocating more than a host has; raise them here, deliberately.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.ml.spec import DEFAULT_DROPOUT

MAX_CANDIDATES = 10**7
MAX_MC_SAMPLES = 1_000
MAX_NUM_SAMPLES = 1_000
MAX_ZETA = 1.0
MAX_FOLDS = 50
MAX_SEED = 2**31 - 1
MAX_MEMBERS = 100
MAX_ENSEMBLE_MEMBERS = 20  # each member is one full training of the project's model
MAX_CEAL_DELTA = 100.0  # nats: above log C for any class count a project can have
MAX_ROUNDS = 1_000
MAX_EPOCHS = 10_000
MAX_CLUSTERS = 100_000  # the project's seed column is a 32-bit INTEGER on Postgres
MAX_VAAL_EPOCHS = 1_000  # each one a pass of a VAE over the items

# Strict: JSON "5", 5.0 or true is not an int here, as the constructors would not take it.
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class AcquisitionParams(BaseModel):
    """What every acquisition strategy takes."""

    model_config = _STRICT

    candidates: int | None = Field(
        None,
        ge=1,
        le=MAX_CANDIDATES,
        description="Score a seeded random subset of this many pool items (None = all).",
    )


class BaldParams(AcquisitionParams):
    mc_samples: int = Field(20, ge=2, le=MAX_MC_SAMPLES, description="MC-dropout passes.")


class NoiseStabilityParams(AcquisitionParams):
    num_samples: int = Field(30, ge=1, le=MAX_NUM_SAMPLES, description="Noisy model copies.")
    zeta: float = Field(
        1e-3,
        gt=0.0,
        le=MAX_ZETA,
        allow_inf_nan=False,
        description="Weight noise relative to each layer's weight norm.",
    )


class EnsembleParams(AcquisitionParams):
    members: int = Field(
        5,
        ge=2,
        le=MAX_ENSEMBLE_MEMBERS,
        description="Ensemble size M: M networks trained as separate tasks, one per member.",
    )


class LearningLossParams(AcquisitionParams):
    margin: float = Field(
        1.0, gt=0.0, le=100.0, allow_inf_nan=False, description="Ranking-loss margin (xi)."
    )
    weight: float = Field(
        1.0, ge=0.0, le=100.0, allow_inf_nan=False, description="Ranking-loss weight (lambda)."
    )
    stop_gradient_after: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Share of the epochs after which the module stops training the network "
        "(the official 120 of 200).",
    )


class EglParams(AcquisitionParams):
    scope: Literal["all", "head"] = Field(
        "all", description="all: every parameter (C backward passes); head: the last layer."
    )


class EmocParams(AcquisitionParams):
    reference: int = Field(
        1000,
        ge=1,
        le=MAX_CANDIDATES,
        description="Pool items (a seeded subset) the expected output change is averaged over.",
    )


Embedding = Literal["features", "input"]
_EMBEDDING_DOC = (
    "features: the model's penultimate features; input: the flattened inputs (also runs at a "
    "cold start, with nothing labelled)."
)


class TypiClustParams(AcquisitionParams):
    k_nn: int = Field(20, ge=1, le=1000, description="Neighbours in the typicality.")
    min_cluster_size: int = Field(
        5, ge=0, le=MAX_CANDIDATES, description="Clusters this small or smaller are skipped."
    )
    max_clusters: int = Field(500, ge=1, le=MAX_CLUSTERS, description="Cap on k of k-means.")
    embedding: Embedding = Field("features", description=_EMBEDDING_DOC)


class ProbCoverParams(AcquisitionParams):
    delta: float | None = Field(
        None,
        gt=0.0,
        le=1e6,
        allow_inf_nan=False,
        description="Ball radius on the unit-normalised embedding (None: from purity).",
    )
    purity: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Share of pure balls (one k-means cluster, K = classes) delta=None keeps.",
    )
    embedding: Embedding = Field("features", description=_EMBEDDING_DOC)


class SuggestiveParams(AcquisitionParams):
    members: int = Field(4, ge=1, le=MAX_MEMBERS, description="Bootstrap ensemble size.")
    uncertain_factor: int = Field(
        2, ge=1, le=100, description="Shortlist K = this x the batch, by ensemble variance."
    )
    weight_decay: float = Field(
        1e-4, ge=0.0, le=100.0, allow_inf_nan=False, description="L2 on each member's head."
    )


class DiscriminativeParams(AcquisitionParams):
    mini_queries: int = Field(20, ge=1, le=MAX_ROUNDS, description="Rounds per batch.")
    unlabelled_ratio: int = Field(
        10, ge=1, le=1000, description="Unlabelled items per labelled one in each round."
    )
    max_epochs: int = Field(
        1000, ge=1, le=MAX_EPOCHS, description="Discriminator epochs (stops at 98% accuracy)."
    )


class VaalParams(AcquisitionParams):
    """VAAL (``worker/ml/vaal.py``); defaults are sinhasam/vaal's ``arguments.py`` except
    ``epochs`` (100 there) and ``width`` (128 there), scaled for CPU workers."""

    latent_dim: int = Field(32, ge=1, le=1024, description="VAE latent dimension.")
    beta: float = Field(
        1.0, ge=0.0, le=1000.0, allow_inf_nan=False, description="Weight of the VAE's KL term."
    )
    adversary_param: float = Field(
        1.0,
        ge=0.0,
        le=1000.0,
        allow_inf_nan=False,
        description="Weight of the VAE's adversarial term (lambda2 in the paper).",
    )
    vae_steps: int = Field(2, ge=1, le=10, description="VAE steps per iteration.")
    adversary_steps: int = Field(1, ge=1, le=10, description="Discriminator steps per iteration.")
    lr: float = Field(
        5e-4, gt=0.0, le=1.0, allow_inf_nan=False, description="Adam lr, VAE and discriminator."
    )
    batch_size: int = Field(128, ge=2, le=4096, description="Items per batch, each side.")
    epochs: int = Field(
        10,
        ge=1,
        le=MAX_VAAL_EPOCHS,
        description="Passes over labelled + unlabelled items (official 100).",
    )
    width: int = Field(16, ge=1, le=128, description="VAE channels w, 2w, 4w, 8w (official 128).")


class BgadlParams(BaldParams):
    """BGADL (``worker/ml/bgadl.py``): BALD's acquisition, and the official VAE-ACGAN (or its
    VAE part alone) trained on the labelled items each cycle, whose samples join the training
    set with their items' labels. Defaults: toantm/BGADL."""

    latent_dim: int = Field(100, ge=1, le=1024, description="Encoder latent dimension.")
    epochs: int = Field(
        50, ge=1, le=MAX_VAAL_EPOCHS, description="Generator epochs over the labelled items."
    )
    batch_size: int = Field(100, ge=2, le=4096, description="Generator batch size.")
    lr: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        allow_inf_nan=False,
        description="Adadelta lr (halved every 8 epochs; the auxiliary classifier's every 5).",
    )
    generator: Literal["vae_acgan", "vae"] = Field(
        "vae_acgan",
        description="vae_acgan: the official VAE-ACGAN (encoder, generator, discriminator, "
        "auxiliary classifier), one reconstruction and one G(z, y) per item; vae: the "
        "encoder and generator alone, one reconstruction per item.",
    )


class CleaningParams(BaseModel):
    """A cleaning cycle's held-out scoring; the cleaning scores themselves take nothing."""

    model_config = _STRICT

    folds: int = Field(
        5, ge=0, le=MAX_FOLDS, description="0 = in-sample scores, else 2..MAX_FOLDS folds."
    )
    fold_seed: int = Field(0, ge=0, le=MAX_SEED, description="Draws each item's fold.")

    @field_validator("folds")
    @classmethod
    def _not_one_fold(cls, folds: int) -> int:
        if folds == 1:
            raise ValueError(f"must be 0 (in-sample) or from 2 to {MAX_FOLDS}")
        return folds


class CealParams(BaseModel):
    """CEAL's pseudo-labels (``worker/ml/ceal.py``), a training option of any acquisition
    strategy: ``params["ceal"]``. Defaults: the paper's δ₀ = 0.005 and dr = 0.00033."""

    model_config = _STRICT

    delta: float = Field(
        0.005,
        gt=0.0,
        le=MAX_CEAL_DELTA,
        allow_inf_nan=False,
        description="Entropy threshold (nats) below which a candidate is pseudo-labelled.",
    )
    decay: float = Field(
        0.00033,
        ge=0.0,
        le=MAX_CEAL_DELTA,
        allow_inf_nan=False,
        description="The threshold falls by this much per cycle: delta - decay * t.",
    )
    max_items: int | None = Field(
        None,
        ge=1,
        le=MAX_CANDIDATES,
        description="At most this many pseudo-labels, the most confident (None = all).",
    )


# Options of training, not of the strategy: any acquisition strategy's params may carry them.
TRAINING_OPTIONS: dict[str, type[BaseModel]] = {"ceal": CealParams}

ACQUISITION: dict[str, type[AcquisitionParams]] = {
    "random": AcquisitionParams,
    "least_confidence": AcquisitionParams,
    "margin": AcquisitionParams,
    "entropy": AcquisitionParams,
    "bald": BaldParams,
    "coreset": AcquisitionParams,
    "badge": AcquisitionParams,
    "noise_stability": NoiseStabilityParams,
    "expected_gradnorm": AcquisitionParams,
    "entropy_gradnorm": AcquisitionParams,
    "dispersion": AcquisitionParams,
    "ensemble_vote_entropy": EnsembleParams,
    "ensemble_consensus_entropy": EnsembleParams,
    "ensemble_mutual_information": EnsembleParams,
    "learning_loss": LearningLossParams,
    "egl": EglParams,
    "emoc": EmocParams,
    "suggestive": SuggestiveParams,
    "discriminative": DiscriminativeParams,
    "typiclust": TypiClustParams,
    "probcover": ProbCoverParams,
    "vaal": VaalParams,
    "bgadl": BgadlParams,
}
CLEANING: dict[str, type[CleaningParams]] = dict.fromkeys(
    ("ce_minus_entropy", "joint", "random", "activelab"), CleaningParams
)
KINDS: dict[str, Mapping[str, type[BaseModel]]] = {"acquire": ACQUISITION, "clean": CLEANING}


@dataclass(frozen=True)
class Need:
    """Something a strategy needs of the project's model, decided from the stored spec
    (``{"name", "input_shape", "hparams"}``) without torch."""

    key: str
    description: str
    met: Callable[[Mapping[str, Any]], bool]


def _dropout(spec: Mapping[str, Any]) -> float:
    hparams = spec.get("hparams") or {}
    return float(hparams.get("dropout", DEFAULT_DROPOUT.get(str(spec.get("name")), 0.0)))


DROPOUT = Need(
    "dropout",
    "dropout in front of the head for MC dropout: hparams.dropout > 0 "
    "(small_cnn and mlp default to 0.5, resnet18 to 0)",
    lambda spec: _dropout(spec) > 0.0,
)

LOSS_MODULE = Need(
    "loss_module",
    "a network that can carry a loss-prediction module on its intermediate features "
    "(small_cnn or resnet18; not mlp)",
    lambda spec: spec.get("name") in ("small_cnn", "resnet18"),
)


def _images(spec: Mapping[str, Any]) -> bool:
    shape = spec.get("input_shape") or ()
    frozen = spec.get("name") == "pretrained" and (spec.get("hparams") or {}).get("frozen", True)
    return len(shape) == 3 and not frozen


IMAGE_INPUT = Need(
    "image_input",
    "image items the network reads as they are, input_shape (C, H, W), to generate new ones "
    "from (not mlp feature vectors nor a frozen backbone's embeddings)",
    _images,
)

NEEDS: dict[str, tuple[Need, ...]] = {
    "bald": (DROPOUT,),
    "learning_loss": (LOSS_MODULE,),
    "bgadl": (DROPOUT, IMAGE_INPUT),
}


class ParamsError(ValueError):
    """Bad strategy parameters; ``key`` names the first bad one (None: not a parameter)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def params_model(kind: str, strategy: str) -> type[BaseModel]:
    """The declared parameters of a ``kind`` ("acquire" or "clean") strategy."""
    models = KINDS.get(kind)
    if models is None:
        raise ParamsError(f"unknown project kind {kind!r}; valid: {sorted(KINDS)}")
    model = models.get(strategy)
    if model is None:
        raise ParamsError(f"unknown {kind} strategy {strategy!r}; choose from {sorted(models)}")
    return model


def declared_defaults(kind: str, strategy: str) -> dict[str, Any]:
    """Parameter name -> default, in declaration order."""
    return {name: f.default for name, f in params_model(kind, strategy).model_fields.items()}


def check_params(kind: str, strategy: str, params: Any) -> dict[str, Any]:
    """The given parameters, validated and normalised (a whole number where a float is
    declared becomes a float); defaults are not filled in. An acquisition cycle's params may
    also hold training options (``TRAINING_OPTIONS``, e.g. ``"ceal"``), checked by their own
    model and returned with their defaults filled in. Raises ``ParamsError``."""
    model = params_model(kind, strategy)
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ParamsError(f"{strategy} parameters must be an object, got {params!r}")
    options = TRAINING_OPTIONS if kind == "acquire" else {}
    unknown = sorted(set(params) - set(model.model_fields) - set(options))
    if unknown:
        raise ParamsError(
            f"unknown parameters {unknown} for strategy {strategy!r}; "
            f"valid: {list(model.model_fields) + list(options)}",
            key=unknown[0],
        )
    own = {k: v for k, v in params.items() if k not in options}
    checked = _validated(model, own, strategy).model_dump(exclude_unset=True)
    for key, option in options.items():
        if key not in params:
            continue
        raw = params[key]
        if raw is not None and not isinstance(raw, Mapping):
            raise ParamsError(f"{key} must be an object or null, got {_short(raw)}", key=key)
        checked[key] = None if raw is None else _validated(option, raw, strategy, key).model_dump()
    return checked


def _validated(
    model: type[BaseModel], params: Mapping[str, Any], strategy: str, prefix: str | None = None
) -> BaseModel:
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in ([prefix] if prefix else []) + list(first["loc"]))
        msg = first["msg"].removeprefix("Value error, ")
        raise ParamsError(
            f"{key}: {msg[:1].lower()}{msg[1:]}, got {_short(first.get('input'))} "
            f"(strategy {strategy!r})",
            key=key,
        ) from None


def strategy_only(params: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy's own parameters: ``params`` without the training options."""
    return {k: v for k, v in params.items() if k not in TRAINING_OPTIONS}


def check_model_fits(kind: str, strategy: str, model_spec: Mapping[str, Any]) -> None:
    """Raise ``ParamsError`` (``key`` = the need's key) when the model cannot give the
    strategy what it needs; the message says what to change."""
    params_model(kind, strategy)
    for need in NEEDS.get(strategy, ()) if kind == "acquire" else ():
        if not need.met(model_spec):
            raise ParamsError(
                f"strategy {strategy!r} needs {need.description}; model "
                f"{model_spec.get('name')!r} has none",
                key=need.key,
            )


def catalogue() -> list[dict[str, Any]]:
    """Every strategy, in declaration order: ``{"name", "kind", "params", "needs"}``, where
    ``params`` maps each parameter to its type, default, bounds and description (JSON Schema
    words) and ``needs`` lists what the model must have."""
    return [
        {
            "name": name,
            "kind": kind,
            "params": _described(model),
            "needs": [need.description for need in NEEDS.get(name, ())]
            if kind == "acquire"
            else [],
        }
        for kind, models in KINDS.items()
        for name, model in models.items()
    ]


def _described(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """The model's JSON Schema per parameter, with ``X | None`` flattened to ``nullable``."""
    out = {}
    for name, prop in model.model_json_schema().get("properties", {}).items():
        branches = prop.get("anyOf", [prop])
        nullable = any(b.get("type") == "null" for b in branches)
        typed: dict[str, Any] = next((b for b in branches if b.get("type") != "null"), {})
        entry = {k: v for k, v in typed.items() if k != "title"}
        entry.update(
            {k: v for k, v in prop.items() if k in ("default", "description")},
            nullable=nullable,
        )
        out[name] = entry
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
