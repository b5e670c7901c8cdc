"""Per-sample gradient norms for the gradient-norm acquisition strategy (Wang et al., AAAI 2022).

Score of an unlabelled sample x, model in eval mode: take an unsupervised loss of the model's own
prediction — "expected" Σ_i p_i·CE(logits, i) (p not detached) or "entropy" H(p) — backprop to all
parameters and add up the L2 norms of the parameter tensors' gradients.

The reference does one backward pass per sample. :func:`gradnorm_scores` gets the same numbers
from one forward and one backward pass per batch: in eval mode the samples of a batch do not
interact, so the gradient of the summed loss with respect to a layer's output, row b, is sample
b's own output gradient δ_b. A layer's per-sample weight gradient is then a small product of δ_b
and that layer's input a_b, whose norm is computed without ever forming all per-sample gradients
of the model at once:

* Linear on (B, in): ||δ_b a_bᵀ||² = ||δ_b||²·||a_b||² (Goodfellow's trick).
* Conv2d and Linear on (B, L, in), per-sample gradient δ_b U_bᵀ with U_b the (unfolded) input:
  whichever costs fewer operations for that layer of (a) forming it for a few samples at a
  time — for a conv tap by tap on shifted views of the input, never unfolding it — or (b) the
  "ghost" form Σ_{l,l'} (δ_l·δ_l')(u_l·u_l'), for outputs with few positions.
* BatchNorm in eval mode, GroupNorm, LayerNorm: gamma's gradient is Σ δ·x̂, beta's is Σ δ,
  per channel.

Models with anything else holding trainable parameters (or a layer called twice in one forward
pass, or one parameter shared by two layers) fall back to ``torch.func`` per-sample gradients,
and to the one-sample loop if even that is impossible.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from worker.ml.kernels._model_io import eval_mode, model_device, model_dtype, to_model_input

Scheme = Literal["expected", "entropy"]

# Scratch elements (per-sample gradients, unfolded inputs, Gram matrices) allowed per block of
# samples; 2**24 float32 = 64 MiB.
_SCRATCH_ELEMENTS = 1 << 24

# Per model, the layers that need copies of their input / output (see _capturing), learnt on the
# first batch and remembered across calls so later calls need no second forward pass.
_CLONE_CACHE: weakref.WeakKeyDictionary[nn.Module, set[int]] = weakref.WeakKeyDictionary()

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)
_SUPPORTED = (nn.Linear, nn.Conv2d, *_NORMS)


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def _per_sample_loss(logits: Tensor, scheme: Scheme) -> Tensor:
    """(B, C) logits -> (B,) unsupervised loss, the same function the reference loop uses."""
    p = torch.softmax(logits, dim=1)
    if scheme == "expected":
        # Σ_i p_i · CE(logits, i) = Σ_i p_i · (-log_softmax_i); p keeps its graph.
        return -(p * torch.log_softmax(logits, dim=1)).sum(dim=1)
    if scheme == "entropy":
        # What Categorical(probs=p).entropy() computes, batched and without argument checks.
        p = p / p.sum(dim=-1, keepdim=True)
        eps = torch.finfo(p.dtype).eps
        logp = torch.log(p.clamp(min=eps, max=1 - eps))
        logp = logp.clamp(min=torch.finfo(logp.dtype).min)
        return -(logp * p).sum(dim=-1)
    raise ValueError(f"unknown gradnorm scheme {scheme!r}; use 'expected' or 'entropy'")


def _reference_loss(logits: Tensor, scheme: Scheme) -> Tensor:
    """(1, C) logits -> scalar loss, written literally as the reference code does it."""
    posterior = torch.softmax(logits, dim=1)
    if scheme == "expected":
        loss = logits.new_zeros(())
        for i in range(logits.shape[1]):
            label = torch.full((1,), i, dtype=torch.long, device=logits.device)
            loss = loss + posterior[0, i] * F.cross_entropy(logits, label)
        return loss
    if scheme == "entropy":
        return Categorical(probs=posterior).entropy().sum()
    raise ValueError(f"unknown gradnorm scheme {scheme!r}; use 'expected' or 'entropy'")


# --------------------------------------------------------------------------------------------
# per-sample squared norms of one layer's gradients
# --------------------------------------------------------------------------------------------


def _product_sq_norms(u: Tensor, d: Tensor) -> Tensor:
    """Squared Frobenius norms of the per-sample products d_b u_bᵀ.

    u: (B, K, L) layer inputs (unfolded), d: (B, O, L) output gradients -> (B,).
    """
    b, k, length = u.shape
    o = d.shape[1]
    direct_cost = o * k * length
    ghost_cost = length * length * (o + k)
    out = u.new_empty(b)
    if direct_cost <= ghost_cost:
        step = max(1, _SCRATCH_ELEMENTS // max(1, o * k))
        for s in range(0, b, step):
            g = torch.bmm(d[s : s + step], u[s : s + step].transpose(1, 2))  # (b', O, K)
            out[s : s + step] = g.flatten(1).square().sum(dim=1)
    else:
        step = max(1, _SCRATCH_ELEMENTS // max(1, 2 * length * length))
        for s in range(0, b, step):
            dd = torch.bmm(d[s : s + step].transpose(1, 2), d[s : s + step])  # (b', L, L)
            uu = torch.bmm(u[s : s + step].transpose(1, 2), u[s : s + step])  # (b', L, L)
            out[s : s + step] = (dd * uu).flatten(1).sum(dim=1)
    return out


def _linear_sq_norms(m: nn.Linear, a: Tensor, d: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """a: (B, ..., in), d: (B, ..., out) -> per-sample squared norms of (weight, bias) grads."""
    w_sq = b_sq = None
    if a.dim() == 2:
        if m.weight.requires_grad:
            w_sq = a.square().sum(dim=1) * d.square().sum(dim=1)
        if m.bias is not None and m.bias.requires_grad:
            b_sq = d.square().sum(dim=1)
        return w_sq, b_sq
    a3 = a.reshape(a.shape[0], -1, a.shape[-1])  # (B, L, in)
    d3 = d.reshape(d.shape[0], -1, d.shape[-1])  # (B, L, out)
    if m.weight.requires_grad:
        w_sq = _product_sq_norms(a3.transpose(1, 2), d3.transpose(1, 2))
    if m.bias is not None and m.bias.requires_grad:
        b_sq = d3.sum(dim=1).square().sum(dim=1)
    return w_sq, b_sq


def _conv_padding(m: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding of ``m``, also for padding="same" / "valid"."""
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return 0, 0, 0, 0
        # "same" (stride 1): torch puts the odd extra element on the right / bottom.
        total_h = m.dilation[0] * (m.kernel_size[0] - 1)
        total_w = m.dilation[1] * (m.kernel_size[1] - 1)
        return total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2
    ph, pw = m.padding
    return pw, pw, ph, ph


def _conv_weight_sq_norms_shifted(m: nn.Conv2d, a_pad: Tensor, d: Tensor) -> Tensor:
    """Per-sample ||grad W||² of a conv from shifted windows, without unfolding the input.

    a_pad: (B, Cin, Hp, Wp) zero-padded input, d: (B, Cout, H', W') output gradients -> (B,).

    The gradient for kernel tap (i, j) is δ (O, L) times the input window read at offset
    (i·dil, j·dil) with the conv's stride. Splitting the input into its stride phases makes each
    window a stride-1 window of one phase; laying the phase out with a row width Wq and padding
    δ to that width with zeros makes the window one contiguous slice of the flattened phase, so
    each tap is a single batched matmul on views. Columns past W' read neighbouring pixels but
    meet zeros in δ.
    """
    bsz, cin, hp, wp = a_pad.shape
    cout, h_out, w_out = d.shape[1], d.shape[2], d.shape[3]
    (sh, sw), (dh, dw), (kh, kw) = m.stride, m.dilation, m.kernel_size
    groups = m.groups
    qh_max, qw_max = (dh * (kh - 1)) // sh, (dw * (kw - 1)) // sw
    wq = max(w_out + qw_max, -(-wp // sw))
    hq = max(h_out + qh_max + 1, -(-hp // sh))  # one spare row keeps every slice in bounds
    a_big = F.pad(a_pad, (0, sw * wq - wp, 0, sh * hq - hp))
    if sh == 1 and sw == 1:
        phases = {(0, 0): a_big}
    else:
        phases = {
            (ph, pw): a_big[:, :, ph::sh, pw::sw].contiguous()
            for ph in range(sh)
            for pw in range(sw)
        }
    flat = {k: v.reshape(bsz * groups, cin // groups, hq * wq) for k, v in phases.items()}
    length = h_out * wq
    d_pad = F.pad(d, (0, wq - w_out)).reshape(bsz * groups, cout // groups, length)
    out = d.new_zeros(bsz * groups)
    for i in range(kh):
        for j in range(kw):
            qh, ph = divmod(i * dh, sh)
            qw, pw = divmod(j * dw, sw)
            begin = qh * wq + qw
            window = flat[(ph, pw)][:, :, begin : begin + length]  # (B·G, Cin/G, L') view
            g = torch.bmm(d_pad, window.transpose(1, 2))  # (B·G, Cout/G, Cin/G)
            out += torch.linalg.vector_norm(g, dim=(1, 2)).square()
    return out.reshape(bsz, groups).sum(dim=1)


def _conv_weight_sq_norms_ghost(m: nn.Conv2d, a_pad: Tensor, d: Tensor) -> Tensor:
    """Per-sample ||grad W||² of a conv in the ghost form on the unfolded input.

    a_pad: (B, Cin, Hp, Wp) zero-padded input, d: (B, Cout, H', W') output gradients -> (B,).
    """
    bsz, cout = d.shape[0], d.shape[1]
    groups = m.groups
    length = d.shape[2] * d.shape[3]
    k_group = (m.in_channels // groups) * m.kernel_size[0] * m.kernel_size[1]
    d3 = d.reshape(bsz * groups, cout // groups, length)
    out = d.new_empty(bsz)
    # Unfolding multiplies the input by the kernel area: a few samples at a time.
    step = max(1, _SCRATCH_ELEMENTS // max(1, groups * (k_group + 2 * length) * length))
    for s in range(0, bsz, step):
        u = F.unfold(
            a_pad[s : s + step], kernel_size=m.kernel_size, dilation=m.dilation, stride=m.stride
        )  # (b', Cin·kh·kw, L); channel-major, so groups are contiguous blocks
        n = u.shape[0]
        sq = _product_sq_norms(
            u.reshape(n * groups, k_group, length), d3[s * groups : (s + n) * groups]
        )
        out[s : s + n] = sq.reshape(n, groups).sum(dim=1)
    return out


def _conv_sq_norms(m: nn.Conv2d, a: Tensor, d: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """a: (B, Cin, H, W), d: (B, Cout, H', W') -> per-sample squared norms of (weight, bias)."""
    w_sq = b_sq = None
    if m.weight.requires_grad:
        groups = m.groups
        length = d.shape[2] * d.shape[3]
        k_group = (m.in_channels // groups) * m.kernel_size[0] * m.kernel_size[1]
        o_group = m.out_channels // groups
        a_pad = F.pad(a, _conv_padding(m))
        if o_group * k_group * length <= length * length * (o_group + k_group):
            # Large outputs: per-sample gradients tap by tap, a few samples at a time.
            step = max(1, _SCRATCH_ELEMENTS // max(1, m.out_channels * (m.in_channels // groups)))
            w_sq = torch.cat(
                [
                    _conv_weight_sq_norms_shifted(m, a_pad[s : s + step], d[s : s + step])
                    for s in range(0, d.shape[0], step)
                ]
            )
        else:
            # Small outputs (L² < O·K per group): the ghost form is cheaper.
            w_sq = _conv_weight_sq_norms_ghost(m, a_pad, d)
    if m.bias is not None and m.bias.requires_grad:
        b_sq = d.flatten(2).sum(dim=2).square().sum(dim=1)
    return w_sq, b_sq


def _norm_layer_sq_norms(m: nn.Module, a: Tensor, d: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """BatchNorm (eval), GroupNorm, LayerNorm: a, d of the input's shape -> per-sample squared
    norms of the (gamma, beta) gradients."""
    weight: Tensor | None = getattr(m, "weight", None)
    bias: Tensor | None = getattr(m, "bias", None)
    bsz = a.shape[0]
    if isinstance(m, nn.LayerNorm):
        x_hat = F.layer_norm(a, m.normalized_shape, None, None, m.eps)
        n_norm = len(m.normalized_shape)
        lead = tuple(range(1, a.dim() - n_norm))  # dims summed over, besides the batch

        def reduce(t: Tensor) -> Tensor:
            return (t.sum(dim=lead) if lead else t).reshape(bsz, -1)

    else:
        if isinstance(m, nn.GroupNorm):
            x_hat = F.group_norm(a, m.num_groups, None, None, m.eps)
        else:
            assert isinstance(m, nn.modules.batchnorm._BatchNorm)
            assert m.running_mean is not None
            assert m.running_var is not None
            shape = (1, -1) + (1,) * (a.dim() - 2)
            inv_std = torch.rsqrt(m.running_var + m.eps).reshape(shape)
            x_hat = (a - m.running_mean.reshape(shape)) * inv_std

        def reduce(t: Tensor) -> Tensor:
            return t.reshape(bsz, t.shape[1], -1).sum(dim=2)

    w_sq = b_sq = None
    if weight is not None and weight.requires_grad:
        w_sq = reduce(d * x_hat).square().sum(dim=1)
    if bias is not None and bias.requires_grad:
        b_sq = reduce(d).square().sum(dim=1)
    return w_sq, b_sq


def _layer_sq_norms(m: nn.Module, a: Tensor, d: Tensor) -> tuple[Tensor | None, Tensor | None]:
    if isinstance(m, nn.Linear):
        return _linear_sq_norms(m, a, d)
    if isinstance(m, nn.Conv2d):
        return _conv_sq_norms(m, a, d)
    return _norm_layer_sq_norms(m, a, d)


# --------------------------------------------------------------------------------------------
# which path a model can take
# --------------------------------------------------------------------------------------------


def _hookable_layers(model: nn.Module) -> list[nn.Module] | None:
    """The layers whose per-sample norms the hook path computes, or None if it cannot handle
    every trainable parameter of ``model`` (an unknown layer type, a shared parameter, a
    batch norm that would use batch statistics, a conv with non-zero padding mode)."""
    layers: list[nn.Module] = []
    seen: set[int] = set()
    for m in model.modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        # A subclass with its own forward (weight standardisation, LoRA, ...) computes something
        # else from its weight than the formulas here assume.
        if not any(isinstance(m, cls) and type(m).forward is cls.forward for cls in _SUPPORTED):
            return None
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            return None
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            m.running_mean is None or m.running_var is None
        ):
            return None
        if any(id(p) in seen for p in own):
            return None
        seen.update(id(p) for p in own)
        layers.append(m)
    # Parameters reachable only through a different path (tied into two modules) were caught
    # above; make sure nothing trainable is missing.
    total = {id(p) for p in model.parameters() if p.requires_grad}
    return layers if total == seen else None


@dataclass
class _Capture:
    """What the hooks record for one layer during one forward and backward pass."""

    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    versions: list[tuple[int, int]] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)


class _UnsupportedError(Exception):
    """The batch cannot take the hook path (a layer ran twice, or was changed in place)."""


@contextlib.contextmanager
def _capturing(layers: list[nn.Module], cloned: set[int]) -> Iterator[dict[int, _Capture]]:
    """Forward hooks that record each layer's input and output.

    Each output also gets a tensor hook: it receives the gradient with respect to the output as
    the layer produced it, even when a later in-place operation (``ReLU(inplace=True)`` after a
    batch norm, ``out += identity`` in a residual block) changes the tensor. Layers in
    ``cloned`` (whose input was changed in place, or whose output gradient could not be caught
    that way) keep a copy of their input and hand a copy of their output to the network.
    """
    captures: dict[int, _Capture] = {id(m): _Capture() for m in layers}
    handles = []

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        cap = captures[id(module)]
        copy = id(module) in cloned
        a = args[0].detach()
        if copy:
            a = a.clone()
        cap.inputs.append(a)
        cap.outputs.append(output)
        cap.versions.append((a._version, output._version))
        if output.requires_grad:
            output.register_hook(cap.grads.append)
        return output.clone() if copy else None

    try:
        for m in layers:
            handles.append(m.register_forward_hook(hook))
        yield captures
    finally:
        for h in handles:
            h.remove()


def _hook_batch(
    model: nn.Module, layers: list[nn.Module], x: Tensor, scheme: Scheme, cloned: set[int]
) -> Tensor:
    """(b, *input_shape) -> (b,) scores by the hook path; raises _UnsupportedError."""
    with _capturing(layers, cloned) as captures:
        logits = model(x)
    caps = [(m, captures[id(m)]) for m in layers]
    if any(len(cap.outputs) > 1 for _, cap in caps):
        raise _UnsupportedError("a layer ran more than once in one forward pass")
    caps = [(m, cap) for m, cap in caps if cap.outputs and cap.outputs[0].requires_grad]
    changed_inputs = {id(m) for m, cap in caps if cap.inputs[0]._version != cap.versions[0][0]}
    if changed_inputs:
        return _rerun_with_copies(model, layers, x, scheme, cloned, changed_inputs)

    loss = _per_sample_loss(logits, scheme).sum()
    intact = [(m, cap) for m, cap in caps if cap.outputs[0]._version == cap.versions[0][1]]
    changed = [(m, cap) for m, cap in caps if cap.outputs[0]._version != cap.versions[0][1]]
    # Asking for the gradients of the untouched outputs drives the backward pass through every
    # layer; the changed outputs' gradients arrive through their tensor hooks on the way.
    grads: dict[int, Tensor | None] = {id(m): None for m, _ in caps}
    if intact:
        got = torch.autograd.grad(loss, [cap.outputs[0] for _, cap in intact], allow_unused=True)
        grads.update({id(m): g for (m, _), g in zip(intact, got, strict=True)})
    missed = {id(m) for m, cap in changed if not cap.grads}
    if missed:
        return _rerun_with_copies(model, layers, x, scheme, cloned, missed)
    grads.update({id(m): cap.grads[0] for m, cap in changed})

    scores = torch.zeros(x.shape[0], dtype=logits.dtype, device=logits.device)
    for m, cap in caps:
        d = grads[id(m)]
        if d is None:
            continue  # the layer does not reach the loss: its gradients are zero / absent
        w_sq, b_sq = _layer_sq_norms(m, cap.inputs[0], d.detach())
        for sq in (w_sq, b_sq):
            if sq is not None:
                scores += sq.clamp_min(0.0).sqrt()
    return scores.detach()


def _rerun_with_copies(
    model: nn.Module,
    layers: list[nn.Module],
    x: Tensor,
    scheme: Scheme,
    cloned: set[int],
    more: set[int],
) -> Tensor:
    if more <= cloned:
        raise _UnsupportedError("a recorded tensor changed although it was copied")
    cloned.update(more)
    return _hook_batch(model, layers, x, scheme, cloned)


def _func_batch(model: nn.Module, x: Tensor, scheme: Scheme) -> Tensor:
    """(b, *input_shape) -> (b,) scores from torch.func per-sample gradients (generic path)."""
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen: dict[str, Tensor] = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_one(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        logits = functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),))
        return _per_sample_loss(logits, scheme).sum()

    per_param = vmap(grad(loss_one), in_dims=(None, 0))(params, x)
    scores = torch.zeros(x.shape[0], dtype=model_dtype(model), device=x.device)
    for g in per_param.values():
        scores += g.flatten(1).norm(dim=1).to(scores.dtype)
    return scores


def _func_scores(model: nn.Module, x: Tensor, scheme: Scheme) -> Tensor:
    # Per-sample gradients of the whole model exist at once here: keep the block small.
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    step = max(1, _SCRATCH_ELEMENTS // max(1, n_params))
    return torch.cat([_func_batch(model, x[s : s + step], scheme) for s in range(0, len(x), step)])


# --------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------


def gradnorm_scores(
    model: nn.Module,
    batches: Iterable[Tensor],
    scheme: Scheme,
    device: torch.device | str | None = None,
) -> Tensor:
    """Gradient-norm scores of a pool, batched.

    Args:
        model: classifier, ``forward(x) -> (b, C)`` logits. Put in eval mode for the call, its
            modes restored after; parameters and their ``.grad`` are left untouched.
        batches: the pool as (b, *input_shape) batches in pool order, streamed once.
        scheme: "expected" (Σ_i p_i·CE(logits, i)) or "entropy" (H(p)).
        device: where to compute; None = where the model is (a model elsewhere is moved there).

    Returns:
        (N,) scores on the CPU, in the model's floating dtype: Σ over trainable parameter
        tensors of the L2 norm of that tensor's gradient of the sample's loss. Equal, up to
        floating-point rounding, to :func:`gradnorm_scores_reference`.
    """
    if scheme not in ("expected", "entropy"):
        raise ValueError(f"unknown gradnorm scheme {scheme!r}; use 'expected' or 'entropy'")
    dev = model_device(model, device)
    dtype = model_dtype(model)
    layers = _hookable_layers(model)
    cloned = _CLONE_CACHE.setdefault(model, set())
    use_loop = False
    out: list[Tensor] = []
    with eval_mode(model), torch.enable_grad():
        for batch in batches:
            x = to_model_input(batch, dev, dtype)
            scores: Tensor | None = None
            if layers is not None:
                try:
                    scores = _hook_batch(model, layers, x, scheme, cloned)
                except _UnsupportedError:
                    layers = None
            if scores is None and not use_loop:
                try:
                    scores = _func_scores(model, x, scheme)
                except Exception:
                    # torch.func cannot run every model (data-dependent control flow, ops
                    # without batching rules); the literal loop always can.
                    use_loop = True
            if scores is None:
                scores = _loop_scores(model, [x], scheme, dev, dtype)
            out.append(scores.detach().to("cpu"))
    return torch.cat(out) if out else torch.zeros(0, dtype=dtype)


def _loop_scores(
    model: nn.Module,
    batches: Iterable[Tensor],
    scheme: Scheme,
    dev: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """The one-sample-at-a-time loop; .grad of every parameter is restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    out: list[Tensor] = []
    try:
        for p in params:
            p.grad = None
        for batch in batches:
            for j in range(batch.shape[0]):
                x = to_model_input(batch[j : j + 1], dev, dtype)
                loss = _reference_loss(model(x), scheme)
                loss.backward()
                total = torch.zeros((), dtype=dtype, device=dev)
                for p in params:
                    if p.grad is not None:
                        total = total + torch.norm(p.grad).to(dtype)
                        p.grad = None
                out.append(total.detach().reshape(1).to("cpu"))
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
    return torch.cat(out) if out else torch.zeros(0, dtype=dtype)


def gradnorm_scores_reference(
    model: nn.Module,
    batches: Iterable[Tensor],
    scheme: Scheme,
    device: torch.device | str | None = None,
) -> Tensor:
    """The reference computation, literally: one sample at a time, ``loss.backward()``, sum over
    parameters of ``torch.norm(param.grad)``. Same arguments and (N,) CPU result as
    :func:`gradnorm_scores`; ``.grad`` of every parameter is as before when it returns."""
    if scheme not in ("expected", "entropy"):
        raise ValueError(f"unknown gradnorm scheme {scheme!r}; use 'expected' or 'entropy'")
    dev = model_device(model, device)
    dtype = model_dtype(model)
    with eval_mode(model), torch.enable_grad():
        return _loop_scores(model, batches, scheme, dev, dtype)
