"""Request and response shapes of the annoloop API, generated from its OpenAPI schema by
``scripts/gen_client_types.py``; do not edit by hand."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

CycleState = Literal[
    "created", "training", "scoring", "labeling", "completed", "failed", "cancelled"
]

LabelSource = Literal["human", "import", "oracle"]

PretrainingStatus = Literal["queued", "running", "done", "failed", "cancelled"]

ProjectKind = Literal["acquire", "clean"]

Role = Literal["admin", "engineer", "annotator"]

Split = Literal["pool", "test"]


class AheadOut(TypedDict):
    """The item after the current one, already leased to the caller (``next?ahead=1``)."""

    lease: LeaseOut
    item: ItemOut
    cycle_id: NotRequired[int | None]


class AnnotationCreate(TypedDict):
    class_index: int
    idempotency_key: NotRequired[str | None]


class AnnotationOut(TypedDict):
    id: int
    item_id: int
    project_id: int
    annotator_id: int
    class_index: int
    source: LabelSource
    cycle_id: int | None
    idempotency_key: str | None
    created_at: str
    retracted_at: str | None


class AnnotatorCount(TypedDict):
    annotator_id: int
    name: str
    labels: int
    agreement: float | None
    agreement_items: int
    gold_accuracy: float | None
    gold_items: int
    estimated_accuracy: float | None


class AnnotatorCreate(TypedDict):
    name: str
    role: NotRequired[Role]


class AnnotatorOut(TypedDict):
    id: int
    name: str
    role: Role
    active: bool
    external: bool
    created_at: str


class AnnotatorWithToken(TypedDict):
    id: int
    name: str
    role: Role
    active: bool
    external: bool
    created_at: str
    token: str


class BulkResult(TypedDict):
    created: int
    first_id: int | None
    last_id: int | None
    splits: dict[str, int]


class CleaningProgress(TypedDict):
    relabel_budget: int | None
    items_cleaned: int
    items_relabelled: int
    majority_changed: int


class CycleCreate(TypedDict):
    strategy: NotRequired[str | None]
    params: NotRequired[dict[str, Any] | None]
    seed: NotRequired[int | None]
    batch_size: NotRequired[int | None]


class CycleOut(TypedDict):
    id: int
    project_id: int
    number: int
    kind: ProjectKind
    state: CycleState
    strategy: str
    params: dict[str, Any]
    seed: int
    batch_size: int
    labelled_set_hash: str | None
    checkpoint_sha256: str | None
    scores_sha256: str | None
    metrics: dict[str, Any]
    timings: dict[str, Any]
    error: str | None
    pretraining_id: int | None
    pretraining_sha256: str | None
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None


class CycleProgress(TypedDict):
    id: int
    number: int
    state: str
    queued: int
    done: int
    open: int


class DeliveryOut(TypedDict):
    id: int
    webhook_id: int
    event: str
    payload: dict[str, Any]
    created_at: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: str
    last_status: int | None
    last_error: str | None
    delivered_at: str | None


class DerivedLabelOut(TypedDict):
    """The label the project's aggregation model derives from the item's live votes."""

    method: str
    class_index: int | None
    label: str | None
    posterior: list[float]
    tied: bool


class ErrorBody(TypedDict):
    """The one error shape, documented so clients (and schema checks) know every 4xx body."""

    error: ErrorDetail


class ErrorDetail(TypedDict):
    code: str
    message: str
    detail: NotRequired[Any]


class FeatureSetOut(TypedDict):
    """One name of feature vectors in a project."""

    name: str
    dim: int
    items: int
    missing: int
    model_input: bool


class FeaturesUploaded(TypedDict):
    stored: dict[str, int]


class GoldImportResult(TypedDict):
    created: int
    unchanged: int
    test_items: int
    pool_items: int


class GoldOut(TypedDict):
    item_id: int
    class_index: int
    created_at: str


class Health(TypedDict):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
    broker: Literal["ok", "unavailable"]
    blobs: Literal["ok", "unavailable"]
    hot_path: Literal["on", "fallback", "unchecked", "off"]


class ImportResult(TypedDict):
    created: int
    skipped_duplicates: int
    annotators_created: int


class ItemOut(TypedDict):
    id: int
    project_id: int
    split: Split
    external_id: str
    blob_sha256: str
    media_type: str
    width: int
    height: int
    meta: dict[str, Any]
    created_at: str


class LabelledItemOut(TypedDict):
    """An item as engineers see it: with its derived label (annotators never get one)."""

    id: int
    project_id: int
    split: Split
    external_id: str
    blob_sha256: str
    media_type: str
    width: int
    height: int
    meta: dict[str, Any]
    created_at: str
    derived: NotRequired[DerivedLabelOut | None]


class LeaseOut(TypedDict):
    id: int
    item_id: int
    queue_entry_id: int
    expires_at: str
    created_at: str


class MemberAdd(TypedDict):
    annotator_id: int


class ModelSpecIn(TypedDict):
    """Which network the worker trains; ``num_classes`` comes from the project's classes."""

    name: Literal["small_cnn", "resnet18", "mlp", "pretrained"]
    input_shape: list[int]
    hparams: NotRequired[dict[str, Any]]
    input: NotRequired[str | None]


class NextOut(TypedDict):
    """What an annotator should do now."""

    status: Literal["leased", "queue_empty", "budget_spent"]
    lease: NotRequired[LeaseOut | None]
    item: NotRequired[ItemOut | None]
    cycle_id: NotRequired[int | None]
    cycle_state: NotRequired[str | None]
    ahead: NotRequired[AheadOut | None]
    reason: NotRequired[Literal["others_needed", "cycle_running", "pool_spent", "no_cycle"] | None]
    waiting_for_others: NotRequired[int | None]


class PageOfAnnotationOut(TypedDict):
    items: list[AnnotationOut]
    next_cursor: str | None


class PageOfLabelledItemOut(TypedDict):
    items: list[LabelledItemOut]
    next_cursor: str | None


class PretrainingCreate(TypedDict):
    """One run's method and its settings; bad values are a 422 naming the key, and nothing is"""

    method: NotRequired[Literal["simclr", "patch_kmeans"]]
    epochs: NotRequired[int | None]
    batch_size: NotRequired[int | None]
    lr: NotRequired[float | None]
    temperature: NotRequired[float | None]
    patch: NotRequired[int | None]
    centroids: NotRequired[int | None]
    patches: NotRequired[int | None]
    iterations: NotRequired[int | None]
    architecture: NotRequired[Literal["small_cnn", "resnet18"] | None]
    seed: NotRequired[int | None]


class PretrainingOut(TypedDict):
    id: int
    project_id: int
    status: PretrainingStatus
    params: dict[str, Any]
    epochs_done: int
    losses: list[float]
    checkpoint_sha256: str | None
    items: int | None
    error: str | None
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    method: Literal["simclr", "patch_kmeans"]
    epochs: int
    last_loss: float | None


class Progress(TypedDict):
    labels_spent: int
    label_budget: int | None
    labels_remaining: int | None
    queue_depth: int
    slots_open: int
    leases_open: int
    cycle: CycleProgress | None
    per_annotator: list[AnnotatorCount]
    labels_last_10_min: int
    rate_per_minute: float
    eta_seconds: float | None
    tied_items: int
    cleaning: NotRequired[CleaningProgress | None]
    stats_as_of: NotRequired[str | None]


class ProjectCreate(TypedDict):
    strategy_params: NotRequired[dict[str, Any] | None]
    labels_per_item: NotRequired[int | None]
    label_budget: NotRequired[int | None]
    batch_size: NotRequired[int | None]
    relabel_budget: NotRequired[int | None]
    finetune_every: NotRequired[int | None]
    auto_advance: NotRequired[bool | None]
    seed: NotRequired[int | None]
    crossfit_folds: NotRequired[int | None]
    aggregation: NotRequired[
        Literal["majority", "majority_tiebreak", "dawid_skene", "crowdlab"] | None
    ]
    honeypot_rate: NotRequired[float | None]
    stop_when_decided: NotRequired[bool | None]
    confidence_target: NotRequired[float | None]
    name: str
    kind: NotRequired[ProjectKind]
    classes: list[str]
    model_spec: ModelSpecIn
    strategy: NotRequired[str | None]


class ProjectOut(TypedDict):
    id: int
    name: str
    kind: ProjectKind
    classes: list[str]
    model_spec: dict[str, Any]
    strategy: str
    strategy_params: dict[str, Any]
    labels_per_item: int
    label_budget: int | None
    labels_spent: int
    batch_size: int
    relabel_budget: int | None
    finetune_every: int | None
    auto_advance: bool
    seed: int
    crossfit_folds: int
    aggregation: str
    honeypot_rate: float
    stop_when_decided: bool
    confidence_target: float | None
    created_at: str
    updated_at: str


class ProjectUpdate(TypedDict):
    strategy_params: NotRequired[dict[str, Any] | None]
    labels_per_item: NotRequired[int | None]
    label_budget: NotRequired[int | None]
    batch_size: NotRequired[int | None]
    relabel_budget: NotRequired[int | None]
    finetune_every: NotRequired[int | None]
    auto_advance: NotRequired[bool | None]
    seed: NotRequired[int | None]
    crossfit_folds: NotRequired[int | None]
    aggregation: NotRequired[
        Literal["majority", "majority_tiebreak", "dawid_skene", "crowdlab"] | None
    ]
    honeypot_rate: NotRequired[float | None]
    stop_when_decided: NotRequired[bool | None]
    confidence_target: NotRequired[float | None]
    name: NotRequired[str | None]
    strategy: NotRequired[str | None]


class QueueEntryOut(TypedDict):
    id: int
    cycle_id: int
    item_id: int
    rank: int
    score: float | None
    labels_wanted: int
    state: str


class ScoreHistogram(TypedDict):
    """The distribution of acquisition scores over the scored pool of one cycle."""

    cycle_id: int
    strategy: str
    n: int
    edges: list[float]
    counts: list[int]
    selected_scores: list[float]


class StrategyOut(TypedDict):
    """One strategy a project or cycle may name, as ``worker/ml/strategy_params.py`` declares it."""

    name: str
    kind: ProjectKind
    params: dict[str, dict[str, Any]]
    needs: list[str]


class TokenCreate(TypedDict):
    label: NotRequired[str | None]


class TokenOut(TypedDict):
    id: int
    prefix: str
    label: str | None
    created_at: str
    token: NotRequired[str | None]


class WebhookCreate(TypedDict):
    url: str
    events: list[Literal["cycle.state_changed", "batch.labelled", "budget.spent"]]
    secret: NotRequired[str | None]


class WebhookOut(TypedDict):
    id: int
    project_id: int
    url: str
    events: list[str]
    active: bool
    created_at: str


class WebhookWithSecret(TypedDict):
    id: int
    project_id: int
    url: str
    events: list[str]
    active: bool
    created_at: str
    secret: str
