"""Expected gradient length (Settles, Craven & Ray, NIPS 2008; Cai et al., ICDM 2013), batched.

Score of an unlabelled sample x, model in eval mode: EGL(x) = Σ_i p_i(x) · ‖∇_θ CE(z(x), i)‖₂,
the gradient of the cross-entropy for each class i the label could be, its Euclidean norm over
every trainable parameter of the model, weighted by the model's own posterior p (a weight, not
differentiated). It is not ``expected_gradnorm``: that is the norm of the gradient of the
expected loss, ‖∇_θ Σ_i p_i CE(z, i)‖ with p differentiated, which is the entropy's gradient
(docs/results.md); here the norm is taken per class, before the expectation.

:func:`egl_scores` gets the per-class per-sample norms from one forward and C backward passes
per batch with the gradient-norm kernel's per-layer formulas (``worker/ml/kernels/gradnorm.py``:
Goodfellow's trick for Linear, shifted-window or ghost norms for Conv2d, per-channel sums for
norm layers), every layer's input and output kept as copies so the C passes can run over one
graph. A model with other layers falls back to the one-sample loop, :func:`egl_scores_reference`.
:func:`egl_head_scores` is the same sum over the head (last Linear) only, in closed form:
‖∇_W CE_i‖² + ‖∇_b CE_i‖² = ‖p − e_i‖² (‖f‖² + 1).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from worker.ml.kernels._model_io import eval_mode, model_device, model_dtype, to_model_input
from worker.ml.kernels.gradnorm import (
    _capturing,
    _hookable_layers,
    _layer_sq_norms,
    _UnsupportedError,
)


def egl_scores(
    model: nn.Module, batches: Iterable[Tensor], device: torch.device | str | None = None
) -> Tensor:
    """(N,) EGL scores of a pool streamed as (b, *input_shape) batches, on the CPU, in the model's
    floating dtype; parameters and their ``.grad`` untouched. Equal, up to rounding, to
    :func:`egl_scores_reference`."""
    dev = model_device(model, device)
    dtype = model_dtype(model)
    layers = _hookable_layers(model)
    out: list[Tensor] = []
    with eval_mode(model), torch.enable_grad():
        for batch in batches:
            x = to_model_input(batch, dev, dtype)
            scores = None
            if layers is not None:
                try:
                    scores = _hook_batch(model, layers, x)
                except _UnsupportedError:
                    layers = None
            if scores is None:
                scores = _loop_batch(model, x)
            out.append(scores.detach().to("cpu"))
    return torch.cat(out) if out else torch.zeros(0, dtype=dtype)


def _hook_batch(model: nn.Module, layers: list[nn.Module], x: Tensor) -> Tensor:
    """(b, ...) -> (b,) by the per-layer formulas; raises _UnsupportedError."""
    # Copies of every input and output: no in-place operation downstream can change what the
    # formulas read, whichever of the C backward passes runs.
    cloned = {id(m) for m in layers}
    with _capturing(layers, cloned) as captures:
        logits = model(x)
    caps = [(m, captures[id(m)]) for m in layers]
    if any(len(cap.outputs) > 1 for _, cap in caps):
        raise _UnsupportedError("a layer ran more than once in one forward pass")
    caps = [(m, cap) for m, cap in caps if cap.outputs and cap.outputs[0].requires_grad]
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.detach().exp()
    num_classes = logits.shape[1]
    scores = torch.zeros(x.shape[0], dtype=logits.dtype, device=logits.device)
    outputs = [cap.outputs[0] for _, cap in caps]
    for i in range(num_classes):
        # Σ_b CE(z_b, i): samples do not interact in eval mode, so row b of each layer's output
        # gradient is sample b's own.
        loss = -log_p[:, i].sum()
        grads = torch.autograd.grad(
            loss, outputs, retain_graph=i < num_classes - 1, allow_unused=True
        )
        sq = torch.zeros_like(scores)
        for (m, cap), d in zip(caps, grads, strict=True):
            cap.grads.clear()  # the tensor hooks' copies: not needed here
            if d is None:
                continue
            for part in _layer_sq_norms(m, cap.inputs[0], d.detach()):
                if part is not None:
                    sq += part.clamp_min(0.0)
        scores += p[:, i] * sq.sqrt()
    return scores.detach()


def _loop_batch(model: nn.Module, x: Tensor) -> Tensor:
    """One sample and one class at a time; ``.grad`` of every parameter restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    out = torch.zeros(x.shape[0], dtype=model_dtype(model), device=x.device)
    try:
        for j in range(x.shape[0]):
            logits = model(x[j : j + 1])
            probs = torch.softmax(logits.detach(), dim=1)[0]
            for i in range(logits.shape[1]):
                for p in params:
                    p.grad = None
                loss = nn.functional.cross_entropy(logits, torch.tensor([i], device=x.device))
                loss.backward(retain_graph=i < logits.shape[1] - 1)
                sq = sum(
                    float(p.grad.double().square().sum()) for p in params if p.grad is not None
                )
                out[j] += probs[i] * sq**0.5
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
    return out


def egl_scores_reference(
    model: nn.Module, batches: Iterable[Tensor], device: torch.device | str | None = None
) -> Tensor:
    """The definition, literally: for each sample and class, ``backward()`` of CE, the
    Euclidean norm of all parameter gradients, weighted by p. Same result as :func:`egl_scores`."""
    dev = model_device(model, device)
    dtype = model_dtype(model)
    out = []
    with eval_mode(model), torch.enable_grad():
        for batch in batches:
            out.append(_loop_batch(model, to_model_input(batch, dev, dtype)).detach().cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=dtype)


def egl_head_scores(features: Tensor, probs: Tensor) -> Tensor:
    """EGL over the head's weight and bias only, from features f (N, F) and posteriors p (N, C):
    Σ_i p_i ‖p − e_i‖ sqrt(‖f‖² + 1), as float64, where ‖p − e_i‖² = ‖p‖² − 2 p_i + 1."""
    f = features.to(torch.float64)
    p = probs.to(torch.float64)
    dist = ((p * p).sum(dim=1, keepdim=True) - 2.0 * p + 1.0).clamp_min(0.0).sqrt()
    return (p * dist).sum(dim=1) * ((f * f).sum(dim=1) + 1.0).sqrt()
