"""The ACGAN half of BGADL's VAE-ACGAN (toantm/BGADL ``demo_mnist.py``, ``VAEACGAN.train``):
the discriminator D, the auxiliary classifier C, and the loop that trains E, G, D and C
together. ``worker/ml/bgadl.py`` holds the encoder, the generator and the VAE-only loop.

Per iteration, as the official code does it (b items x with label vectors y, z ~ N(0, I)
drawn once per iteration and used by both G(z, y) below):

1. E step: ``MSE(G(e, y), x) + latent_loss`` (e reparameterised from E(x)); only E steps.
2. G step: ``BCE(D(G(z, y)), 1) + CE(C(G(z, y)), y) + 0.75 * MSE(G(e', y), x)``, e' from the
   updated E; only G steps.
3. D and C step: ``BCE(D(x), 1) + BCE(D(G(z, y)), 0) + BCE(D(G(e'', y)), 0)`` for D and
   ``CE(C(x), y) + CE(C(G(z, y)), y) + CE(C(G(e'', y)), y)`` for C, G(z, y) recomputed with
   the updated G and e'' a third encoding; D steps, then C.

Adadelta (lr 1, rho 0.9, eps 1e-6) for all four; E, G, D halve their lr every 8 epochs, C
every 5 and has weight decay 3.5 / M (the official ``init_model``). Each optimizer is zeroed
right before its own backward, so gradients a loss leaves on other networks never reach a step:
here those networks are detached or frozen instead, which changes no step and saves passes.

C is the official classifier (``lenet``, PyTorch's default initialisation), fresh per call and
discarded after: the official trains the task model itself in this loop (the same ``lenet``)
and evaluates it, while here the project's task model trains afterwards with its own
configuration, so C exists only to give G its auxiliary-classifier term and be trained as the
official trains its classifier. Using the official network (not a copy of the project's model)
keeps the generator's training the official one whatever the project's network is, and cheap:
a LeNet next to a ResNet would otherwise cost a ResNet four passes per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.ml.bgadl import (
    _BATCH_STREAM,
    _NOISE_STREAM,
    DECODER_WEIGHT,
    EPS,
    LR_GAMMA,
    LR_STEP,
    RHO,
    BgadlConfig,
    Encoder,
    Generator,
    TrainedVAE,
    build,
    epoch_batches,
    initialize_weights,
    latent_loss,
    padded_shape,
    reparameterize,
)
from worker.ml.vaal import sub_seed

_INIT_STREAM = 0x42474435  # "BGD5": D and C (E and G take bgadl.py's, as in "vae" mode)
_SAMPLE_STREAM = 0x42475A36  # "BGZ6": z of the samples generated after training
CLASSIFIER_LR_STEP = 5  # official model_scheduler StepLR(step_size=5, gamma=0.5)
CLASSIFIER_DECAY = 3.5  # official weight_decay = 3.5 / len(train_data)


class Discriminator(nn.Module):
    """Official ``discriminator`` (infoGAN's): (B, C, H, W) -> (B, 1) in (0, 1).
    conv 4/2/1 to 64, LeakyReLU 0.2, conv 4/2/1 to 128, BN, LeakyReLU, Linear to 1024, BN,
    LeakyReLU, Linear to 1, Sigmoid (H, W multiples of 4)."""

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        self.flat = 128 * (h // 4) * (w // 4)
        self.conv = nn.Sequential(
            nn.Conv2d(c, 64, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1),
            nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2),
        )
        self.fc1 = nn.Sequential(
            nn.Linear(self.flat, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2)
        )
        self.dc = nn.Sequential(nn.Linear(1024, 1), nn.Sigmoid())
        initialize_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dc(self.fc1(self.conv(x).view(-1, self.flat)))
        return out


class AuxClassifier(nn.Module):
    """Official ``lenet``: (B, C, H, W) -> (B, K) logits. conv 5x5 pad 2 to 6, ReLU, maxpool 2,
    conv 5x5 to 16, ReLU, maxpool 2, Linear to 120, ReLU, 84, ReLU, K; default initialisation
    (on 28x28 the flattened size is the official 16 * 5 * 5)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        self.conv1 = nn.Conv2d(c, 6, (5, 5), padding=2)
        self.conv2 = nn.Conv2d(6, 16, (5, 5))
        self.fc1 = nn.Linear(16 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2), 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), (2, 2))
        x = F.relu(self.fc1(x.flatten(1)))
        out: Tensor = self.fc3(F.relu(self.fc2(x)))
        return out


@dataclass
class AcganNets:
    encoder: Encoder
    generator: Generator
    discriminator: Discriminator
    classifier: AuxClassifier

    def all(self) -> tuple[nn.Module, ...]:
        return (self.encoder, self.generator, self.discriminator, self.classifier)


def build_acgan(
    input_shape: Sequence[int], num_classes: int, config: BgadlConfig, seed: int
) -> AcganNets:
    """Fresh E, G (the very ones ``bgadl.build`` gives for ``seed``), D and C, weights from
    ``seed`` (global RNG forked)."""
    enc, gen = build(input_shape, num_classes, config, seed)
    shape = padded_shape(input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sub_seed(seed, _INIT_STREAM))
        return AcganNets(enc, gen, Discriminator(shape), AuxClassifier(shape, num_classes))


def aux_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The official ``CE(C(.), argmax y)``, on the label vector itself so soft labels keep
    their weights (for one-hot y the same loss)."""
    return F.cross_entropy(logits, y)


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def train_vae_acgan(
    x: Tensor,
    y: Tensor,
    config: BgadlConfig,
    seed: int,
    device: torch.device | None = None,
    *,
    nets: AcganNets | None = None,
    batches: Iterator[list[np.ndarray]] | None = None,
) -> TrainedVAE:
    """Train E, G, D and C as the official ``VAEACGAN.train`` does (see the module docstring).

    ``x`` (M, C, H, W) in [0, 1] (H, W multiples of 4), ``y`` (M, K) label vectors. ``nets``
    and ``batches`` (one list of index batches per epoch) override the seeded ones. Returns E
    and G with the last (E, G, D, C) losses."""
    if len(x) < 2:
        raise ValueError(f"bgadl needs at least 2 labelled items (BatchNorm), got {len(x)}")
    dev = device or torch.device("cpu")
    n = nets if nets is not None else build_acgan(x.shape[1:], y.shape[1], config, seed)
    for net in n.all():
        net.to(dev).train()
    enc, gen, disc, clf = n.encoder, n.generator, n.discriminator, n.classifier
    # z of G(z, y) and the reparameterisation draws share one stream, in the official order.
    noise = torch.Generator().manual_seed(sub_seed(seed, _NOISE_STREAM))
    if batches is None:
        rng = np.random.default_rng([seed, _BATCH_STREAM])
        batches = (epoch_batches(len(x), config.batch_size, rng) for _ in range(config.epochs))

    def adadelta(net: nn.Module, decay: float = 0.0) -> torch.optim.Adadelta:
        return torch.optim.Adadelta(
            net.parameters(), lr=config.lr, rho=RHO, eps=EPS, weight_decay=decay
        )

    opt_e, opt_g, opt_d = adadelta(enc), adadelta(gen), adadelta(disc)
    opt_c = adadelta(clf, CLASSIFIER_DECAY / len(x))
    losses: tuple[Tensor, ...] = (torch.zeros(()),) * 4
    for epoch, epoch_idx in zip(range(config.epochs), batches, strict=False):
        # The official schedulers step at each epoch's start.
        for opt in (opt_e, opt_g, opt_d):
            _set_lr(opt, config.lr * LR_GAMMA ** ((epoch + 1) // LR_STEP))
        _set_lr(opt_c, config.lr * LR_GAMMA ** ((epoch + 1) // CLASSIFIER_LR_STEP))
        for idx in epoch_idx:
            t = torch.from_numpy(idx)
            xb, yb = x[t].to(dev), y[t].to(dev)
            b = len(idx)
            z = torch.randn((b, config.latent_dim), generator=noise).to(dev)
            real, fake = torch.ones(b, 1, device=dev), torch.zeros(b, 1, device=dev)
            # E step.
            opt_e.zero_grad()
            mu, log_var = enc(xb)
            out = gen(reparameterize(mu, log_var, noise), yb)
            e_loss = F.mse_loss(out, xb) + latent_loss(mu, log_var)
            e_loss.backward()
            opt_e.step()
            # G step: adversarial + auxiliary terms on G(z, y), decoder term after re-encoding.
            opt_g.zero_grad()
            for p in (*disc.parameters(), *clf.parameters()):
                p.requires_grad_(False)
            g_z = gen(z, yb)
            g_loss = F.binary_cross_entropy(disc(g_z), real) + aux_loss(clf(g_z), yb)
            mu, log_var = (v.detach() for v in enc(xb))
            g_dec = gen(reparameterize(mu, log_var, noise), yb)
            g_loss = g_loss + DECODER_WEIGHT * F.mse_loss(g_dec, xb)
            g_loss.backward()
            opt_g.step()
            for p in (*disc.parameters(), *clf.parameters()):
                p.requires_grad_(True)
            # D and C step on real, G(z, y) and G(e'', y) (each module's calls in official order).
            opt_d.zero_grad()
            opt_c.zero_grad()
            with torch.no_grad():
                g_z = gen(z, yb)
                mu, log_var = enc(xb)
                g_dec = gen(reparameterize(mu, log_var, noise), yb)
            d_loss = (
                F.binary_cross_entropy(disc(xb), real)
                + F.binary_cross_entropy(disc(g_z), fake)
                + F.binary_cross_entropy(disc(g_dec), fake)
            )
            c_loss = aux_loss(clf(xb), yb) + aux_loss(clf(g_z), yb) + aux_loss(clf(g_dec), yb)
            d_loss.backward()
            opt_d.step()
            c_loss.backward()
            opt_c.step()
            losses = (e_loss, g_loss, d_loss, c_loss)
    return TrainedVAE(enc, gen, tuple(float(v.item()) for v in losses))


@torch.no_grad()
def sample(
    trained: TrainedVAE,
    y: Tensor,
    seed: int,
    device: torch.device | None = None,
    batch: int = 256,
) -> Tensor:
    """G(z, y) per label vector, z ~ N(0, I) from ``seed``, eval mode (as the official
    ``visualize_results(fix=False)`` draws its samples): (M, K) -> (M, C, H, W)."""
    dev = device or torch.device("cpu")
    gen_net = trained.generator.to(dev).eval()
    z_dim = gen_net.in_features - y.shape[1]
    noise = torch.Generator().manual_seed(sub_seed(seed, _SAMPLE_STREAM))
    out = []
    for s in range(0, len(y), batch):
        yb = y[s : s + batch]
        z = torch.randn((len(yb), z_dim), generator=noise).to(dev)
        out.append(gen_net(z, yb.to(dev)).cpu())
    return torch.cat(out)
