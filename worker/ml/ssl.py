"""SimCLR self-supervised pretraining of a classifier's body on the unlabelled pool.

Two augmented views of every item in a batch are pulled together and pushed away from the
other 2(B - 1) views by the NT-Xent loss on a projection head (Chen et al., ICML 2020). The
encoder is the project's own ``Classifier.body`` (``features(x)``), so the checkpoint is exactly
the backbone a cycle's model starts from; the projection head is dropped afterwards.

Determinism: the encoder's initial weights come from ``build_model(spec, seed)`` (the caller),
the projection head from ``seed``; shuffling uses a loader generator, the augmentations their
own ``torch.Generator``, and the global RNG is forked and seeded for the run. After every epoch
``PretrainState`` holds all four, so a run resumed from epoch k's state ends with the same
weights, bit for bit on the CPU, as one never stopped (``training.TrainState``'s pattern).

Inputs: images ``(C, H, W)`` in [0, 1] get the SimCLR image augmentations; feature vectors
``(D,)`` get random feature masking and Gaussian noise scaled by each feature's batch std (as
SCARF-style corruption; plain SimCLR has no augmentation for vectors).
"""

from __future__ import annotations

import copy
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from worker.ml.data import make_loader
from worker.ml.device import resolve_device

__all__ = [
    "PretrainConfig",
    "PretrainState",
    "ProjectionHead",
    "augment",
    "augment_features",
    "augment_images",
    "encoder_state",
    "nt_xent",
    "pretrain",
]

# Offsets that make the augmentation and head seeds differ from the loader's (same ``seed``).
_AUG_SEED = 7_919
_HEAD_SEED = 104_729


@dataclass(frozen=True)
class PretrainConfig:
    """SimCLR knobs. ``batch_size`` items give 2 * batch_size views per step."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    temperature: float = 0.5
    seed: int = 0
    projection_dim: int = 64

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.projection_dim < 1:
            raise ValueError("epochs >= 1, batch_size >= 2 and projection_dim >= 1 are needed")
        if not (self.lr > 0 and self.temperature > 0):
            raise ValueError("lr and temperature must be positive")


@dataclass
class PretrainState:
    """Everything ``pretrain`` needs to go on after ``epochs_done`` epochs as if it had never
    stopped. ``encoder`` is the body's state dict: what a cycle loads into ``features``."""

    epochs_done: int
    losses: list[float]
    seconds: float
    encoder: dict[str, Any]
    projector: dict[str, Any]
    optimizer: dict[str, Any]
    loader_rng: Tensor
    aug_rng: Tensor
    global_rng: Tensor

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(self.__dict__, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PretrainState:
        return cls(**torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


def encoder_state(checkpoint: bytes) -> dict[str, Any]:
    """The encoder (``Classifier.body``) weights of a pretraining checkpoint's bytes."""
    return PretrainState.from_bytes(checkpoint).encoder


class ProjectionHead(nn.Module):
    """(B, F) -> (B, projection_dim): Linear(F, F) > ReLU > Linear(F, projection_dim)."""

    def __init__(self, feature_dim: int, projection_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), nn.ReLU(), nn.Linear(feature_dim, projection_dim)
        )

    def forward(self, h: Tensor) -> Tensor:
        out: Tensor = self.net(h)
        return out


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent over two views: (B, D), (B, D) -> () mean over the 2B anchors.

    Row i of ``z1`` and row i of ``z2`` are a positive pair; every other of the 2B rows is a
    negative. Cosine similarities divided by ``temperature``; an anchor never meets itself.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positives)


def augment_images(x: Tensor, gen: torch.Generator) -> Tensor:
    """SimCLR's image views, batched: (B, C, H, W) in [0, 1] -> (B, C, H, W).

    Random resized crop (area 0.2-1, aspect 3/4-4/3, bilinear) and horizontal flip in one
    ``grid_sample``; colour jitter with p = 0.8 (brightness, contrast 0.4; saturation 0.4 on
    RGB; hue is left out: it needs an HSV round trip and matters little at these sizes);
    grayscale with p = 0.2 on RGB. Every draw comes from ``gen`` (CPU), a fixed number per
    batch, so the views depend on ``gen``'s state and the batch alone.
    """
    b, c = x.shape[0], x.shape[1]
    dev = x.device

    def draw(*shape: int) -> Tensor:
        return torch.rand(shape, generator=gen).to(dev)

    area = 0.2 + 0.8 * draw(b)
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * draw(b)
    ratio = torch.exp(log_ratio)
    # Crop width / height as fractions of the image's; clipped so the crop stays inside.
    sw = torch.sqrt(area * ratio).clamp(max=1.0)
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2 * draw(b) - 1) * (1 - sw)
    cy = (2 * draw(b) - 1) * (1 - sh)
    flip = torch.where(draw(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    jitter = (draw(b) < 0.8).view(b, 1, 1, 1)
    brightness = (0.6 + 0.8 * draw(b)).view(b, 1, 1, 1)
    contrast = (0.6 + 0.8 * draw(b)).view(b, 1, 1, 1)
    saturation = (0.6 + 0.8 * draw(b)).view(b, 1, 1, 1)
    gray_p = (draw(b) < 0.2).view(b, 1, 1, 1)
    jittered = (out * brightness).clamp(0, 1)
    mean = jittered.mean(dim=(1, 2, 3), keepdim=True)
    jittered = ((jittered - mean) * contrast + mean).clamp(0, 1)
    if c == 3:
        gray = _gray(jittered)
        jittered = ((jittered - gray) * saturation + gray).clamp(0, 1)
    out = torch.where(jitter, jittered, out)
    if c == 3:
        out = torch.where(gray_p, _gray(out).expand_as(out), out)
    return out


def _gray(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma (ITU-R 601, as torchvision)."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def augment_features(
    x: Tensor, gen: torch.Generator, *, mask_p: float = 0.2, noise: float = 0.1
) -> Tensor:
    """Views of feature vectors: (B, D) -> (B, D).

    Each feature is zeroed with probability ``mask_p`` and gets Gaussian noise of ``noise``
    times its standard deviation over the batch (a batch of one: noise times 1).
    """
    b, d = x.shape
    keep = (torch.rand((b, d), generator=gen) >= mask_p).to(x.device)
    eps = torch.randn((b, d), generator=gen).to(x.device)
    scale = x.std(dim=0, keepdim=True) if b > 1 else torch.ones(1, d, device=x.device)
    return x * keep + noise * scale * eps


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Image views for (B, C, H, W), feature views for (B, D)."""
    if x.dim() == 4:
        return augment_images(x, gen)
    if x.dim() == 2:
        return augment_features(x, gen)
    raise ValueError(f"SimCLR augments (B, C, H, W) images or (B, D) vectors, got {tuple(x.shape)}")


EpochCallback = Callable[[PretrainState], None]


def pretrain(
    encoder: nn.Module,
    feature_dim: int,
    dataset: Dataset[Any],
    config: PretrainConfig,
    *,
    device: torch.device | str | None = None,
    resume: PretrainState | None = None,
    on_epoch: EpochCallback | None = None,
) -> PretrainState:
    """Train ``encoder`` ((B, *input_shape) -> (B, feature_dim)) in place with SimCLR.

    ``dataset`` items are ``x`` or tuples whose first element is ``x``. ``resume`` (a state of
    a run with the same encoder architecture, data and config) goes on after its epoch.
    ``on_epoch(state)`` runs after every epoch with the state so far (a checkpoint and the
    progress); an exception it raises stops the run, which its last state can resume.
    Returns the final state. A trailing batch of one item is dropped.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n < 2:
        raise ValueError(f"SimCLR needs at least 2 items, got {n}")
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + _HEAD_SEED)
        projector = ProjectionHead(feature_dim, config.projection_dim)
    encoder.to(dev)
    projector.to(dev)
    params = list(encoder.parameters()) + list(projector.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    drop_last = n % config.batch_size == 1
    loader = make_loader(
        dataset, config.batch_size, shuffle=True, seed=config.seed, drop_last=drop_last
    )
    assert loader.generator is not None  # a shuffled loader has one (make_loader)
    aug_gen = torch.Generator().manual_seed(config.seed + _AUG_SEED)
    losses: list[float] = []
    first = 0
    start = time.perf_counter()
    state = resume
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if resume is not None:
            encoder.load_state_dict(resume.encoder)
            projector.load_state_dict(resume.projector)
            optimizer.load_state_dict(resume.optimizer)
            loader.generator.set_state(resume.loader_rng)
            aug_gen.set_state(resume.aug_rng)
            torch.set_rng_state(resume.global_rng)
            losses, first = list(resume.losses), resume.epochs_done
            start -= resume.seconds
        encoder.train()
        projector.train()
        for _epoch in range(first, config.epochs):
            total, count = 0.0, 0
            for batch in loader:
                x = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(dev)
                x = x.to(torch.float32)
                z1 = projector(encoder(augment(x, aug_gen)))
                z2 = projector(encoder(augment(x, aug_gen)))
                loss = nt_xent(z1, z2, config.temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(x)
                count += len(x)
            losses.append(total / max(count, 1))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"pretraining diverged: epoch losses {losses}")
            state = PretrainState(
                epochs_done=len(losses),
                losses=list(losses),
                seconds=time.perf_counter() - start,
                encoder=_cpu(encoder.state_dict()),
                projector=_cpu(projector.state_dict()),
                optimizer=copy.deepcopy(optimizer.state_dict()),  # Adam updates in place
                loader_rng=loader.generator.get_state(),
                aug_rng=aug_gen.get_state(),
                global_rng=torch.get_rng_state(),
            )
            if on_epoch is not None:
                on_epoch(state)
    assert state is not None  # config.epochs >= 1, or resume was given
    return state


def _cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}
