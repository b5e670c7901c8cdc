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
- BGADL's training (``ceal.fit(augment=...)`` with the default generator, the official
  VAE-ACGAN: E, G, D and an auxiliary classifier C trained together on the labelled items,
  then one reconstruction and one G(z, y) per item, then the task model on labelled +
  generated) against the same training without it. Per generator iteration of b items: two
  E+G forward+backward passes (the E step; the G step's decoder term, whose E part is only a
  forward there, counted whole), one G(z)+D+C forward+backward (the G step's adversarial and
  auxiliary terms), two E+G forwards (the D and C step's G(e, y) and G(z, y), the latter
  counted with an E it does not run) and three D+C forward+backward passes (real, G(z, y),
  G(e, y)), each costed per item as measured; plus an Adadelta step of each of E, G, D and C
  (G's and D's ~7M parameters each make those steps as dear as a batch's passes: measured
  too). Then two E+G forwards per item (the samples); the task model then trains on 3M
  items. W = 3 + that work over the task model's passes; the target 1.5 W.

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
from worker.ml import bgadl_acgan as bga
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
    strategy = get_strategy("bgadl", **params)  # the default generator, the VAE-ACGAN
    gc = bg.BgadlConfig(
        strategy.latent_dim,  # type: ignore[attr-defined]
        strategy.epochs,  # type: ignore[attr-defined]
        strategy.batch_size,  # type: ignore[attr-defined]
        strategy.lr,  # type: ignore[attr-defined]
        strategy.generator,  # type: ignore[attr-defined]
    )
    nets = bga.build_acgan(SHAPE, 10, gc, seed=0)
    enc, gen, disc, clf = nets.encoder, nets.generator, nets.discriminator, nets.classifier
    for net in nets.all():
        net.train()
    m = len(lab)
    b = min(gc.batch_size, m)
    xb, yb = lab[:b], targets[:b].float()
    noise = torch.Generator().manual_seed(0)
    z = torch.randn((b, gc.latent_dim), generator=noise)
    real = torch.ones(b, 1)

    def zero_grads() -> None:
        for net in nets.all():
            net.zero_grad(set_to_none=True)

    def eg_fb() -> None:  # an E step's passes, or the G step's decoder term
        mu, log_var = enc(xb)
        out = gen(bg.reparameterize(mu, log_var, noise), yb)
        (F.mse_loss(out, xb) + bg.latent_loss(mu, log_var)).backward()
        zero_grads()

    def gdc_fb() -> None:  # the G step's adversarial + auxiliary terms, through D and C
        g_z = gen(z, yb)
        (F.binary_cross_entropy(disc(g_z), real) + bga.aux_loss(clf(g_z), yb)).backward()
        zero_grads()

    def dc_fb() -> None:  # one of the D and C step's three batches
        (F.binary_cross_entropy(disc(xb), real) + bga.aux_loss(clf(xb), yb)).backward()
        zero_grads()

    def eg_f() -> None:
        with torch.no_grad():
            gen(enc(xb)[0], yb)

    # G's fc to 128 x H/4 x W/4 and D's fc from it hold most of the ~14M parameters: at a
    # batch of 100 one Adadelta step over them costs about as much as the batch's passes, so
    # the floor counts the E, G, D and C steps of every iteration too.
    opts = [
        torch.optim.Adadelta(net.parameters(), lr=gc.lr, rho=bg.RHO, eps=bg.EPS)
        for net in nets.all()
    ]

    def steps() -> None:
        for opt in opts:
            opt.step()

    repeats = 1 if cfg.quick else 3
    fb, fw = _per_item(eg_fb, b, repeats), _per_item(eg_f, b, repeats)
    adv, dc = _per_item(gdc_fb, b, repeats), _per_item(dc_fb, b, repeats)
    for p in [q for net in nets.all() for q in net.parameters()]:  # the passes leave none
        p.grad = torch.zeros_like(p)
    opt = _per_item(steps, 1, repeats)
    config = TrainConfig.from_hparams(spec.hparams)
    iterations = gc.epochs * (m // b)
    # Per iteration: E step and the G step's decoder term (2 E+G fwd+bwd; the second only
    # forwards E, counted whole), the G step's G(z)+D+C fwd+bwd, the D and C step's G(z) and
    # G(e) forwards (2 E+G forwards, G(z) counted with E) and D+C fwd+bwd on 3 batches, the
    # four optimizer steps; then a reconstruction and a G(z) per item (2 E+G forwards).
    per_iteration = b * (2 * fb + adv + 2 * fw + 3 * dc) + opt
    work = iterations * per_iteration + 2 * m * fw
    w = 3.0 + work / (config.epochs * m * task_fb)  # the task model trains on 3M items
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
        f"{gc.generator}, {gc.epochs} generator epochs, batch {gc.batch_size}, z "
        f"{gc.latent_dim}; small CNN {config.epochs} epochs on {m} labelled + {2 * m} "
        f"generated ({src})"
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
            f"BGADL D+C fwd+bwd / task fwd+bwd, per item [batch {b}]",
            dc * b,
            task_fb * b,
            "task",
            None,
            cfg,
        ),
        ratio_row(
            f"BGADL E, G, D, C Adadelta steps / the iteration's passes [batch {b}]",
            opt,
            per_iteration - opt,
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
