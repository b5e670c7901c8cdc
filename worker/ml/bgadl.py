"""BGADL's generative augmentation (Tran, Do, Reid & Carneiro, Bayesian Generative Active Deep
Learning, ICML 2019), the official VAE-ACGAN (toantm/BGADL, ``demo_mnist.py``): this module
holds the encoder E, the generator G and the VAE part's loop; ``bgadl_acgan.py`` the
discriminator D, the auxiliary classifier C and the whole VAE-ACGAN loop.

BGADL acquires with BALD (``strategies/bgadl.py``) and trains the classifier on the labelled
items *and* samples generated from them. The official code builds fresh E, G, D and classifier
per acquisition and trains them on all labelled items for 50 epochs of batches of 100 with
Adadelta (lr 1, rho 0.9, eps 1e-6, halved every 8 epochs; the classifier's every 5), each
iteration (b items x with label vectors y, z ~ N(0, I)):

- E step: ``MSE(G(e, y), x) + latent_loss(mu, log_var)``, ``mu, log_var = E(x)``, ``e = mu +
  eps * exp(log_var / 2)``, ``latent_loss = 0.5 * mean(mu^2 + sigma^2 - log sigma^2 - 1)`` (a
  mean, unlike VAAL's summed KL);
- G step: ``BCE(D(G(z, y)), 1) + CE(C(G(z, y)), y) + 0.75 * MSE(G(e', y), x)``, e' re-encoded
  after the E step;
- D and C step: D on real x (target 1), G(z, y) and G(e'', y) (target 0); the classifier on
  the same three batches, each with the batch's labels.

So per epoch the official classifier trains on each labelled item once, one reconstruction
G(e, y) of it and one G(z, y) with its label, both from the G of that iteration.

``generator`` (a strategy parameter) picks the loop. ``"vae_acgan"`` (the default) trains all
four networks exactly as the official loop does (``bgadl_acgan.train_vae_acgan``), then
generates per labelled item one reconstruction G(e, y) and one sample G(z, y) from noise with
its label: the task model trains on labelled ∪ those 2M samples, the official classifier's
1 : 1 : 1 mix. ``"vae"`` trains the VAE part alone (the E step and the G step's decoder term,
``train_vae``) and generates the M reconstructions: the behaviour before the ACGAN was added,
bit-identical, so earlier results reproduce.

Still different from the official code, each stated: the task model is not trained inside the
loop; the project trains it afterwards with its own configuration (optimizer, epochs,
schedule, class weighting) on labelled ∪ generated, as CEAL's second stage does. The loop's
classifier C is the official ``lenet``, fresh per cycle and discarded after (``bgadl_acgan``
says why); the samples are generated once after training, in eval mode (running BatchNorm
statistics, so a sample depends on its item and its noise alone; the official classifier sees
fresh train-mode samples every iteration). Generated samples are training data only: they are
stored with the cycle's record and never become pool items.

Other differences: the encoder's last convolution (one channel, as official) is flattened into
``fc1`` so any image size works (on 28x28 this is the official Linear(1, 1024)); inputs are
zero-padded to multiples of 4 for the networks (28 and 32 need none); D's fc and C's fc1 take
the padded size (official on 28x28); batches are drawn from a seeded shuffle per epoch
(official: the labelled set in a fixed order, the remainder past the last full batch never
seen); labels may be soft (G is conditioned on the target vector, C's cross-entropy takes it
as the target distribution; for hard labels both are the official one-hot and argmax); inputs
outside [0, 1] are mapped affinely into it for G's sigmoid and back.

Every random draw comes from the seed: weights (global RNG forked), batches (``default_rng``),
z and the reparameterisation noise for training, and the noise for generation (CPU
``torch.Generator``s).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from worker.ml.data import ArrayDataset
from worker.ml.vaal import sub_seed

_INIT_STREAM = 0x42474931  # "BGI1"
_BATCH_STREAM = 0x42474232  # "BGB2"
_NOISE_STREAM = 0x42474E33  # "BGN3"
_GEN_STREAM = 0x42474734  # "BGG4"
DECODER_WEIGHT = 0.75  # official: G_loss += 0.75 * G_dec_loss
LR_STEP, LR_GAMMA = 8, 0.5  # official StepLR(step_size=8, gamma=0.5), stepped at each epoch start
RHO, EPS = 0.9, 1e-6  # official Adadelta


def _conv_out(n: int) -> int:
    return (n + 2 - 4) // 2 + 1  # a 4x4 convolution, stride 2, padding 1


class Encoder(nn.Module):
    """Official ``encoder``: (B, C, H, W) -> mu, log_var (B, z), both through a sigmoid.
    conv 4/2/1 to 64, BN, ReLU, maxpool 2, conv 4/2/1 to 128, BN, ReLU, conv 4/2/1 to 1, ReLU,
    flatten (official 28x28: one value), fc1 to 1024 + ReLU, fc21 / fc22 to z + Sigmoid."""

    def __init__(self, input_shape: Sequence[int], z_dim: int) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        self.conv = nn.Sequential(
            nn.Conv2d(c, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=2),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 1, 4, stride=2, padding=1),
            nn.ReLU(),
        )
        hh, ww = h, w
        for pool in (False, True, False, False):  # conv, maxpool, conv, conv
            hh, ww = (hh // 2, ww // 2) if pool else (_conv_out(hh), _conv_out(ww))
        if hh < 1 or ww < 1:
            raise ValueError(f"bgadl's encoder needs images of at least 16x16, got {h}x{w}")
        self.fc1 = nn.Sequential(nn.Linear(hh * ww, 1024), nn.ReLU())
        self.fc21 = nn.Sequential(nn.Linear(1024, z_dim), nn.Sigmoid())
        self.fc22 = nn.Sequential(nn.Linear(1024, z_dim), nn.Sigmoid())
        initialize_weights(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.fc1(self.conv(x).flatten(1))
        return self.fc21(h), self.fc22(h)


class Generator(nn.Module):
    """Official ``generator`` (infoGAN's): (z (B, z_dim), y (B, K)) -> (B, C, H, W) in [0, 1].
    Linear to 1024, BN, ReLU, Linear to 128 * H/4 * W/4, BN, ReLU, convT 4/2/1 to 64, BN,
    ReLU, convT 4/2/1 to C, Sigmoid (H, W multiples of 4)."""

    def __init__(self, output_shape: Sequence[int], z_dim: int, y_dim: int) -> None:
        super().__init__()
        c, h, w = (int(s) for s in output_shape)
        if h % 4 or w % 4:
            raise ValueError(f"the generator needs H, W multiples of 4, got {h}x{w}")
        self.hq, self.wq = h // 4, w // 4
        self.in_features = z_dim + y_dim
        self.fc = nn.Sequential(
            nn.Linear(z_dim + y_dim, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, 128 * self.hq * self.wq),
            nn.BatchNorm1d(128 * self.hq * self.wq),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, c, 4, 2, 1),
            nn.Sigmoid(),
        )
        initialize_weights(self)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        x = self.fc(torch.cat([z, y], 1))
        out: Tensor = self.deconv(x.view(-1, 128, self.hq, self.wq))
        return out


def initialize_weights(net: nn.Module) -> None:
    """Official ``utils.initialize_weights``: N(0, 0.02) weights, zero biases on every Conv2d,
    ConvTranspose2d and Linear; BatchNorm keeps PyTorch's 1/0."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            m.weight.data.normal_(0, 0.02)
            if m.bias is not None:
                m.bias.data.zero_()


def latent_loss(mu: Tensor, log_var: Tensor) -> Tensor:
    """Official: 0.5 * mean(mu^2 + sigma^2 - log sigma^2 - 1)."""
    std = log_var.mul(0.5).exp()
    stddev_sq = std * std
    return 0.5 * torch.mean(mu * mu + stddev_sq - torch.log(stddev_sq) - 1)


def reparameterize(mu: Tensor, log_var: Tensor, gen: torch.Generator) -> Tensor:
    std = log_var.mul(0.5).exp()
    eps = torch.randn(tuple(std.shape), generator=gen).to(std.device, std.dtype)
    return eps.mul(std).add(mu)


GeneratorKind = Literal["vae_acgan", "vae"]
GENERATOR_KINDS: tuple[GeneratorKind, ...] = ("vae_acgan", "vae")


@dataclass(frozen=True)
class BgadlConfig:
    latent_dim: int = 100  # official z_dim
    epochs: int = 50  # official VAEACGAN.epoch
    batch_size: int = 100  # official
    lr: float = 1.0  # official Adadelta lr
    generator: GeneratorKind = "vae_acgan"  # official; "vae": the VAE part alone


def padded_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    c, h, w = (int(s) for s in shape)
    return c, -(-h // 4) * 4, -(-w // 4) * 4


def build(
    input_shape: Sequence[int], num_classes: int, config: BgadlConfig, seed: int
) -> tuple[Encoder, Generator]:
    """Fresh E and G for padded ``input_shape``, weights from ``seed`` (global RNG forked)."""
    shape = padded_shape(input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sub_seed(seed, _INIT_STREAM))
        return Encoder(shape, config.latent_dim), Generator(shape, config.latent_dim, num_classes)


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's (b,) index batches, b = min(batch_size, n), a seeded shuffle, the trailing
    partial batch dropped (as the official ``len(data_X) // batch_size`` iterations)."""
    b = min(batch_size, n)
    perm = rng.permutation(n)
    return [perm[s : s + b] for s in range(0, n - b + 1, b)]


@dataclass
class TrainedVAE:
    encoder: Encoder
    generator: Generator
    losses: tuple[float, ...]  # last (E, G) losses; (E, G, D, C) with the ACGAN


def train_vae(
    x: Tensor,
    y: Tensor,
    config: BgadlConfig,
    seed: int,
    device: torch.device | None = None,
    *,
    nets: tuple[Encoder, Generator] | None = None,
    batches: Iterator[list[np.ndarray]] | None = None,
) -> TrainedVAE:
    """Train E and G as the official ``VAEACGAN.train`` trains them, without D and C.

    ``x`` (M, C, H, W) in [0, 1] (H, W multiples of 4), ``y`` (M, K) label vectors.
    ``nets`` and ``batches`` (one list of index batches per epoch) override the seeded ones.
    """
    if len(x) < 2:
        raise ValueError(f"bgadl needs at least 2 labelled items (BatchNorm), got {len(x)}")
    dev = device or torch.device("cpu")
    enc, gen_net = nets if nets is not None else build(x.shape[1:], y.shape[1], config, seed)
    enc.to(dev)
    gen_net.to(dev)
    noise = torch.Generator().manual_seed(sub_seed(seed, _NOISE_STREAM))
    if batches is None:
        rng = np.random.default_rng([seed, _BATCH_STREAM])
        batches = (epoch_batches(len(x), config.batch_size, rng) for _ in range(config.epochs))
    opt_e = torch.optim.Adadelta(enc.parameters(), lr=config.lr, rho=RHO, eps=EPS)
    opt_g = torch.optim.Adadelta(gen_net.parameters(), lr=config.lr, rho=RHO, eps=EPS)
    enc.train()
    gen_net.train()
    e_loss = g_loss = torch.zeros(())
    for epoch, epoch_idx in zip(range(config.epochs), batches, strict=False):
        # The official schedulers step at each epoch's start: epoch e runs at lr * 0.5^((e+1)//8).
        lr = config.lr * LR_GAMMA ** ((epoch + 1) // LR_STEP)
        for opt in (opt_e, opt_g):
            for group in opt.param_groups:
                group["lr"] = lr
        for idx in epoch_idx:
            t = torch.from_numpy(idx)
            xb, yb = x[t].to(dev), y[t].to(dev)
            # E step: reconstruction + latent loss, the generator fixed.
            opt_e.zero_grad()
            mu, log_var = enc(xb)
            out = gen_net(reparameterize(mu, log_var, noise), yb)
            e_loss = F.mse_loss(out, xb) + latent_loss(mu, log_var)
            e_loss.backward()
            opt_e.step()
            # G step, its decoder term: re-encode with the updated E (official order).
            opt_g.zero_grad()
            mu, log_var = enc(xb)
            g_dec = gen_net(reparameterize(mu, log_var, noise), yb)
            g_loss = DECODER_WEIGHT * F.mse_loss(g_dec, xb)
            g_loss.backward()
            opt_g.step()
    return TrainedVAE(enc, gen_net, (float(e_loss.item()), float(g_loss.item())))


@torch.no_grad()
def reconstruct(
    trained: TrainedVAE,
    x: Tensor,
    y: Tensor,
    seed: int,
    device: torch.device | None = None,
    batch: int = 256,
) -> Tensor:
    """x' = G(mu + eps * sigma, y) per item, eval mode: (M, C, H, W) -> (M, C, H, W)."""
    dev = device or torch.device("cpu")
    enc, gen_net = trained.encoder.to(dev).eval(), trained.generator.to(dev).eval()
    noise = torch.Generator().manual_seed(sub_seed(seed, _GEN_STREAM))
    out = []
    for s in range(0, len(x), batch):
        mu, log_var = enc(x[s : s + batch].to(dev))
        out.append(gen_net(reparameterize(mu, log_var, noise), y[s : s + batch].to(dev)).cpu())
    return torch.cat(out) if out else x[:0].clone()


@dataclass(frozen=True)
class Generated:
    """A cycle's generated samples: ``inputs`` (K, *shape) float32 in the data's range,
    ``targets`` (K, C) the source items' targets, ``sources`` (K,) int64 positions of the
    source items in the labelled set (for a sample from noise, the item whose label it was
    generated with), ``from_noise`` (K,) bool G(z, y) rather than a reconstruction;
    ``losses`` the generator's last (E, G) or (E, G, D, C) losses."""

    inputs: np.ndarray
    targets: np.ndarray
    sources: np.ndarray
    from_noise: np.ndarray
    losses: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.sources)


def generate(
    x: np.ndarray | Tensor,
    targets: np.ndarray,
    config: BgadlConfig,
    seed: int,
    device: torch.device | None = None,
) -> Generated:
    """Train the generator on the labelled ``x`` (M, C, H, W) with ``targets`` (M, K) and
    generate one reconstruction per item, then (``vae_acgan``) one G(z, y) per item's label."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    lo, hi = min(0.0, float(xt.min())), max(1.0, float(xt.max()))  # [0, 1] data: identity
    x01 = (xt - lo) / (hi - lo)
    h, w = x01.shape[2:]
    _, ph, pw = padded_shape(x01.shape[1:])
    top, left = (ph - h) // 2, (pw - w) // 2
    padded = F.pad(x01, (left, pw - w - left, top, ph - h - top))
    m, t = len(xt), np.asarray(targets, dtype=np.float32)
    if config.generator == "vae":
        trained = train_vae(padded, yt, config, seed, device)
        out = reconstruct(trained, padded, yt, seed, device)
        sources, targets_out = np.arange(m, dtype=np.int64), t
    else:
        # Imported here: the ACGAN module builds on this one's networks.
        from worker.ml import bgadl_acgan

        trained = bgadl_acgan.train_vae_acgan(padded, yt, config, seed, device)
        recon = reconstruct(trained, padded, yt, seed, device)
        out = torch.cat([recon, bgadl_acgan.sample(trained, yt, seed, device)])
        sources, targets_out = np.tile(np.arange(m, dtype=np.int64), 2), np.concatenate([t, t])
    out = out[:, :, top : top + h, left : left + w]
    return Generated(
        inputs=(out * (hi - lo) + lo).numpy().astype(np.float32),
        targets=targets_out,
        sources=sources,
        from_noise=np.arange(len(sources)) >= m,
        losses=trained.losses,
    )


class Augmenter:
    """``fit(augment=...)``: called with the labelled Dataset of ``(x, target)`` items, returns
    the Dataset of generated ``(x', target)`` items; ``generated`` keeps them for the record."""

    def __init__(self, config: BgadlConfig, seed: int, device: torch.device | None = None):
        self.config, self.seed, self.device = config, seed, device
        self.generated: Generated | None = None

    def __call__(self, labelled: Dataset[Any]) -> Dataset[Any] | None:
        n = len(labelled)  # type: ignore[arg-type]
        if n < 2:
            return None  # nothing to train a BatchNorm'd VAE on: plain training
        items = [labelled[i] for i in range(n)]
        x = torch.stack([item[0] for item in items])
        if x.dim() != 4:
            raise ValueError(
                f"bgadl generates images (C, H, W); the items are {tuple(x.shape[1:])}"
            )
        t = torch.stack([item[1] for item in items]).numpy()
        self.generated = generate(x, t, self.config, self.seed, self.device)
        return ArrayDataset(self.generated.inputs, self.generated.targets)


def record(generated: Generated, item_ids: np.ndarray) -> dict[str, np.ndarray]:
    """What a cycle stores: the generated inputs, each with its source item's id, target and
    whether it came from noise, and the generator's last losses."""
    return {
        "source_item_ids": np.asarray(item_ids, dtype=np.int64)[generated.sources],
        "inputs": generated.inputs,
        "targets": generated.targets,
        "from_noise": generated.from_noise,
        "losses": np.asarray(generated.losses, dtype=np.float64),
    }
