"""Noise-stability deviations (Li et al., AAAI 2024) for the noise-stability strategy.

For k = 1..K the clean weights get a fresh Gaussian perturbation, scaled per layer so that
||noise|| = ζ·||W|| (every module with a ``weight``: conv, linear, norm-layer gamma; biases and
running statistics untouched). A sample's deviation under perturbation k is
Δ_k(x) = (p_noisy(x) - p_clean(x)) / ||p_clean(x)||₂, on the softmax output or on the
penultimate features, and its feature vector for k-center is the concatenation over k.

Perturbation k is drawn from a generator seeded by (seed, k) alone, so results do not depend on
how the pool is batched or sharded over workers, and the reference can redraw the same noise.

:func:`noise_deviations` streams the pool once: per batch one clean forward pass and K noisy
ones. The noisy weights are never written into the model — each noisy pass runs the model
through ``torch.func.functional_call`` with the perturbed weights substituted — so the model is
bit-identical afterwards even if the pool iterator raises half-way. The K perturbed weight sets
are kept while they fit in ``cache_bytes`` (the small CNN needs ~22 MB for K = 30, ResNet-18
~1.3 GB); the rest are redrawn from their generator for every batch, which costs random-number
generation but gives the same numbers.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from worker.ml.kernels._model_io import eval_mode, model_device, model_dtype, to_model_input

Target = Literal["softmax", "features"]

# Default memory for perturbed weight sets kept across batches (see the module docstring).
DEFAULT_CACHE_BYTES = 2 << 30


def noise_generator(seed: int, k: int) -> torch.Generator:
    """A CPU generator seeded by (seed, k) only: the noise of perturbation k under ``seed``."""
    digest = hashlib.blake2b(f"annoloop-noise:{int(seed)}:{int(k)}".encode(), digest_size=8)
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1))
    return g


def perturbable_weights(model: nn.Module) -> list[tuple[str, Tensor]]:
    """(name, tensor) of every module's floating ``weight``, in ``named_modules`` order.

    Names are parameter names ("conv1.weight"); a tensor shared by two modules is listed once.
    """
    out: list[tuple[str, Tensor]] = []
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        w = getattr(module, "weight", None)
        if not isinstance(w, Tensor) or not w.is_floating_point() or id(w) in seen:
            continue
        seen.add(id(w))
        out.append((f"{prefix}.weight" if prefix else "weight", w))
    return out


def sample_noise(model: nn.Module, zeta: float, generator: torch.Generator) -> dict[str, Tensor]:
    """One perturbation of ``model``: {weight name: noise of the weight's shape, dtype, device}.

    Noise ~ N(0, 1) drawn on the generator's device in float32, layer by layer in
    ``named_modules`` order, then rescaled so that ||noise|| = zeta · ||W|| for each layer.
    """
    noise: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, w in perturbable_weights(model):
            n = torch.randn(
                w.shape, generator=generator, dtype=torch.float32, device=generator.device
            )
            n = n.to(device=w.device, dtype=w.dtype)
            n.mul_(zeta * w.norm() / n.norm())
            noise[name] = n
    return noise


class _Call(nn.Module):
    """Calls ``model.forward`` or ``model.features``, so functional_call can run either."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self.model, self.method)(x)


def _output_fn(target: Target) -> tuple[str, Callable[[Tensor], Tensor]]:
    if target == "softmax":
        return "forward", lambda out: torch.softmax(out, dim=1)
    if target == "features":
        return "features", lambda out: out.flatten(1)
    raise ValueError(f"unknown noise-stability target {target!r}; use 'softmax' or 'features'")


def _deviation(noisy: Tensor, clean: Tensor, clean_norm: Tensor) -> Tensor:
    """(b, C) noisy and clean outputs, (b, 1) clean norms -> (b, C) Δ."""
    return (noisy - clean) / clean_norm


def _clean_norm(clean: Tensor) -> Tensor:
    # A zero output (possible for ReLU features) would divide by zero: floor at the tiniest normal.
    return clean.norm(dim=1, keepdim=True).clamp_min(torch.finfo(clean.dtype).tiny)


def noise_deviations(
    model: nn.Module,
    batches: Iterable[Tensor],
    *,
    num_samples: int = 30,
    zeta: float = 1e-3,
    seed: int,
    device: torch.device | str | None = None,
    target: Target = "softmax",
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> Tensor:
    """Noise-stability deviation vectors of a pool, streaming the pool once.

    Args:
        model: classifier (``forward`` -> (b, C) logits; ``features`` -> (b, F) for
            target="features"). Run in eval mode, modes restored after; its weights are never
            modified.
        batches: the pool as (b, *input_shape) batches in pool order, iterated once.
        num_samples: K, the number of perturbations.
        zeta: relative noise scale ζ per layer.
        seed: perturbation k uses ``noise_generator(seed, k)``.
        device: where to compute; None = where the model is (a model elsewhere is moved there).
        target: "softmax" (classification) or "features" (penultimate layer).
        cache_bytes: memory for perturbed weight sets kept across batches; results do not
            depend on it.

    Returns:
        (N, K·C) (or (N, K·F)) on the CPU in the model's dtype; columns k·C..(k+1)·C-1 hold Δ_k.
    """
    method, out_fn = _output_fn(target)
    if num_samples < 0:
        raise ValueError("num_samples must be non-negative")
    dev = model_device(model, device)
    dtype = model_dtype(model)
    caller = _Call(model, method)
    weights = perturbable_weights(model)

    def perturbed(k: int) -> dict[str, Tensor]:
        noise = sample_noise(model, zeta, noise_generator(seed, k))
        # The same float operation as adding the noise into a copy of the weight in place.
        return {f"model.{name}": w.detach() + noise[name] for name, w in weights}

    per_set = sum(w.numel() * w.element_size() for _, w in weights)
    n_cached = num_samples if per_set == 0 else min(num_samples, max(0, cache_bytes) // per_set)
    out: list[Tensor] = []
    with eval_mode(model), torch.no_grad():
        cached = [perturbed(k) for k in range(n_cached)]
        for batch in batches:
            x = to_model_input(batch, dev, dtype)
            clean = out_fn(caller(x))
            norm = _clean_norm(clean)
            dev_k = clean.new_empty((clean.shape[0], num_samples, clean.shape[1]))
            for k in range(num_samples):
                params = cached[k] if k < n_cached else perturbed(k)
                noisy = out_fn(functional_call(caller, params, (x,)))
                dev_k[:, k] = _deviation(noisy, clean, norm)
            out.append(dev_k.flatten(1).to("cpu"))
    if not out:
        return torch.zeros((0, 0), dtype=dtype)
    return torch.cat(out)


def noise_deviations_reference(
    model: nn.Module,
    batches: Iterable[Tensor],
    *,
    num_samples: int = 30,
    zeta: float = 1e-3,
    seed: int,
    device: torch.device | str | None = None,
    target: Target = "softmax",
) -> Tensor:
    """The reference computation, literally: clean outputs over the pool, then for each k a deep
    copy of the model with that k's noise added layer by layer and another pass over the pool.

    Same arguments and (N, K·C) CPU result as :func:`noise_deviations`; the pool is held in
    memory (it is iterated K + 1 times).
    """
    method, out_fn = _output_fn(target)
    dev = model_device(model, device)
    dtype = model_dtype(model)
    pool = [to_model_input(b, dev, dtype) for b in batches]

    def outputs(m: nn.Module) -> Tensor:
        with torch.no_grad():
            return torch.cat([out_fn(getattr(m, method)(x)) for x in pool]) if pool else None  # type: ignore[return-value]

    if not pool:
        return torch.zeros((0, 0), dtype=dtype)
    with eval_mode(model):
        clean = outputs(model)
        norm = _clean_norm(clean)
        diffs = []
        for k in range(num_samples):
            noise = sample_noise(model, zeta, noise_generator(seed, k))
            noisy_model = copy.deepcopy(model)
            noisy_model.eval()
            with torch.no_grad():
                tensors = dict(perturbable_weights(noisy_model))
                for name, n in noise.items():
                    tensors[name].add_(n)
            diffs.append(_deviation(outputs(noisy_model), clean, norm))
    if not diffs:
        return torch.zeros((clean.shape[0], 0), dtype=dtype)
    return torch.cat(diffs, dim=1).to("cpu")
