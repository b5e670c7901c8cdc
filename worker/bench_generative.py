"""``annoloop bench`` section ``generative``: VAAL and BGADL against one plain training.

Both train a second network next to the task model, so their floor is counted in network
passes, each costed by a pass measured in the same run on the same images:

- VAAL's selection (``Vaal.choose``: a fresh VAE + discriminator, then scoring) against one
  training of the task model on the labelled items. Per VAAL epoch over the M labelled + N
  candidates, each item goes through ``2 * vae_steps`` VAE(+D) forward+backward passes (a
  step takes a labelled and an unlabelled batch) and ``2 * adversary_steps`` VAE forwards
  (the discriminator's steps; the discriminator itself is a 3-layer MLP on the latent, noise
  next to the VAE), then N scoring forwards; the task model does one
  forward+backward per labelled item per epoch. The work ratio W is that count, each term
  weighted by its measured per-item cost over the task model's; the target is 1.5 W (see
  ``SLACK``).
- BGADL's training (``ceal.fit(augment=...)``: the generator's VAE on the labelled items,
  one reconstruction each, then the task model on labelled + generated) against the same
  training without it. Per generator epoch each labelled item goes through two encoder +
  generator forward+backward passes (the E step and the G step), and each batch costs an
  Adadelta step of E and one of G (G's ~7M parameters make that step as dear as a batch's
  passes: measured too), then one forward per item; the task model then trains on 2M items.
  W = 2 + that work over the task model's passes; the target 1.5 W.

``--quick`` runs the same code on a few items for an epoch (a few seconds; SMOKE).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from worker.ml import bgadl as bg
from worker.ml import vaal as va
from worker.ml.ceal import fit
from worker.ml.data import TensorPool, one_hot
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.training import TrainConfig, train

if TYPE_CHECKING:
    from worker.bench import Config, Row

# Above the work count: the optimizers' and batching's own costs, and the measurement: the
# selection or training is timed once (tens of seconds), the passes as the min of 3 short
# runs, so load from other processes biases the ratio up (1.35x seen at load 5 on 2 cores).
SLACK = 1.5
SHAPE = (1, 28, 28)


def _per_item(fn: Callable[[], object], n: int, repeats: int) -> float:
    """Seconds per item of ``fn`` (which processes ``n`` items): min of ``repeats`` after a
    warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / n


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _task_pass(spec: ModelSpec, x: Tensor) -> Callable[[], None]:
    """One task-model forward+backward over ``x`` (training mode, CE), no optimizer."""
    model = build_model(spec, seed=0).train()
    labels = torch.zeros(len(x), dtype=torch.long)

    def run() -> None:
        F.cross_entropy(model(x), labels).backward()
        model.zero_grad(set_to_none=True)

    return run


def bench_generative(cfg: Config) -> list[Row]:
    from worker.bench import _load_images, _ratio_row

    torch.manual_seed(0)
    quick = cfg.quick
    m, n, epochs = (8, 16, 1) if quick else (100, 500, 10)  # task epochs: the project default
    x, src = _load_images(cfg, "mnist10k.npz", m + n, SHAPE)
    lab, unl = x[:m], x[m:]
    targets = torch.from_numpy(one_hot(np.random.default_rng(0).integers(0, 10, m), 10))
    spec = ModelSpec("small_cnn", SHAPE, 10, {"epochs": epochs, "batch_size": 8 if quick else 64})
    config = TrainConfig.from_hparams(spec.hparams)
    repeats = 1 if quick else max(1, min(cfg.repeats, 3))
    pass_batch = 8 if quick else 128
    task_fb = _per_item(_task_pass(spec, x[:pass_batch]), pass_batch, repeats)
    plain = min(
        _timed(lambda: train(build_model(spec, 0), TensorDataset(lab, targets), config, seed=0))
        for _ in range(repeats)
    )
    return [
        *_vaal_rows(cfg, lab, unl, task_fb, plain, epochs, src, _ratio_row),
        *_bgadl_rows(cfg, spec, lab, targets, task_fb, plain, src, _ratio_row),
    ]


def _vaal_rows(
    cfg: Config,
    lab: Tensor,
    unl: Tensor,
    task_fb: float,
    plain: float,
    task_epochs: int,
    src: str,
    ratio_row: Callable[..., Row],
) -> list[Row]:
    params = {"epochs": 1, "batch_size": 8} if cfg.quick else {}  # else the defaults
    strategy = get_strategy("vaal", **params)
    c = strategy.config  # type: ignore[attr-defined]
    vae, disc = va.build(SHAPE, c, seed=0)
    vae.train()
    xb = torch.cat([lab, unl])[: c.batch_size]

    def vae_fb() -> None:  # one side of a VAE step: VAE loss + adversarial term, backward
        recon, _, mu, logvar = vae(xb)
        p = disc(mu).view(-1)
        loss = va.vae_loss(xb, recon, mu, logvar, c.beta) + F.binary_cross_entropy(
            p, torch.ones_like(p)
        )
        loss.backward()
        vae.zero_grad(set_to_none=True)
        disc.zero_grad(set_to_none=True)

    def vae_f() -> None:
        with torch.no_grad():
            vae(xb)

    repeats = 1 if cfg.quick else 3
    fb, fw = _per_item(vae_fb, len(xb), repeats), _per_item(vae_f, len(xb), repeats)
    m, n = len(lab), len(unl)
    # Each batch draw is min(batch, M) labelled + min(batch, N) unlabelled items.
    items = va.iterations_of(m + n, c) * (min(c.batch_size, m) + min(c.batch_size, n))
    work = items * (c.vae_steps * fb + c.adversary_steps * fw) + n * fw
    w = work / (task_epochs * m * task_fb)
    took = _timed(lambda: strategy.choose({"inputs": unl.numpy()}, 10, 0, {"inputs": lab.numpy()}))
    what = (
        f"width {c.width}, {c.epochs} epochs, {m} labelled + {n} candidates vs small CNN "
        f"{task_epochs} epochs on the {m} ({src})"
    )
    return [
        ratio_row(
            f"VAE+D fwd+bwd / task fwd+bwd, per item [batch {len(xb)}]",
            fb * len(xb),
            task_fb * len(xb),
            "task",
            None,
            cfg,
        ),
        ratio_row(
            f"VAAL choose / one task training [{what}]",
            took,
            plain,
            f"one training (W {w:.1f}x)",
            round(SLACK * w, 1),
            cfg,
        ),
    ]


def _bgadl_rows(
    cfg: Config,
    spec: ModelSpec,
    lab: Tensor,
    targets: Tensor,
    task_fb: float,
    plain: float,
    src: str,
    ratio_row: Callable[..., Row],
) -> list[Row]:
    params = {"epochs": 1, "batch_size": 4, "latent_dim": 8} if cfg.quick else {}
    strategy = get_strategy("bgadl", **params)
    gc = bg.BgadlConfig(strategy.latent_dim, strategy.epochs, strategy.batch_size, strategy.lr)  # type: ignore[attr-defined]
    enc, gen = bg.build(SHAPE, 10, gc, seed=0)
    enc.train()
    gen.train()
    m = len(lab)
    b = min(gc.batch_size, m)
    xb, yb = lab[:b], targets[:b].float()
    noise = torch.Generator().manual_seed(0)

    def eg_fb() -> None:  # an E or G step's passes: encode, generate, loss, backward
        mu, log_var = enc(xb)
        out = gen(bg.reparameterize(mu, log_var, noise), yb)
        (F.mse_loss(out, xb) + bg.latent_loss(mu, log_var)).backward()
        enc.zero_grad(set_to_none=True)
        gen.zero_grad(set_to_none=True)

    def eg_f() -> None:
        with torch.no_grad():
            gen(enc(xb)[0], yb)

    # The generator's fc to 128 x H/4 x W/4 holds most of its ~7M parameters: at a batch of
    # 100 one Adadelta step over them costs about as much as the batch's passes, so the
    # floor counts the E and G steps of every iteration too.
    opt_e = torch.optim.Adadelta(enc.parameters(), lr=gc.lr, rho=bg.RHO, eps=bg.EPS)
    opt_g = torch.optim.Adadelta(gen.parameters(), lr=gc.lr, rho=bg.RHO, eps=bg.EPS)

    def steps() -> None:
        opt_e.step()
        opt_g.step()

    repeats = 1 if cfg.quick else 3
    fb, fw = _per_item(eg_fb, b, repeats), _per_item(eg_f, b, repeats)
    for p in [*enc.parameters(), *gen.parameters()]:  # eg_fb leaves none
        p.grad = torch.zeros_like(p)
    opt = _per_item(steps, 1, repeats)
    config = TrainConfig.from_hparams(spec.hparams)
    iterations = gc.epochs * (m // b)
    work = iterations * (2 * b * fb + opt) + m * fw
    w = 2.0 + work / (config.epochs * m * task_fb)
    data = TensorDataset(lab, targets)

    def with_generator() -> None:
        fit(
            build_model(spec, 0),
            data,
            config,
            seed=0,
            options=None,
            cycle_index=0,
            candidates=TensorPool(lab[:0], 64),
            pseudo_dataset=lambda p, t: data,  # never called: CEAL is off
            augment=strategy.augmentation(0),  # type: ignore[attr-defined]
        )

    took = _timed(with_generator)
    what = (
        f"{gc.epochs} generator epochs, batch {gc.batch_size}, z {gc.latent_dim}; small CNN "
        f"{config.epochs} epochs on {m} labelled ({src})"
    )
    return [
        ratio_row(
            f"BGADL E+G fwd+bwd / task fwd+bwd, per item [batch {b}]",
            fb * b,
            task_fb * b,
            "task",
            None,
            cfg,
        ),
        ratio_row(
            f"BGADL E + G Adadelta steps / the batch's two E+G fwd+bwd [batch {b}]",
            opt,
            2 * b * fb,
            "passes",
            None,
            cfg,
        ),
        ratio_row(
            f"BGADL training / plain training [{what}]",
            took,
            plain,
            f"plain training (W {w:.1f}x)",
            round(SLACK * w, 1),
            cfg,
        ),
    ]
