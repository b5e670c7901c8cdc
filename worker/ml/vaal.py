"""VAAL: variational adversarial active learning (Sinha, Ebrahimi & Darrell, ICCV 2019).

A β-VAE learns one latent space for the labelled and the unlabelled items; a discriminator on
the latent means learns to tell labelled (target 1) from unlabelled (target 0), while the VAE
is trained, next to its own loss, to make the discriminator call every item labelled. The
items to label are those the discriminator is least sure are labelled: the B lowest
D(mu(x)), here the B highest ``1 - D(mu(x))``.

As the official code (sinhasam/vaal, ``solver.py``, ``model.py``, ``sampler.py``) does it, per
iteration, on a labelled batch x_l and an unlabelled batch x_u:

- ``vae_steps`` VAE steps (a fresh pair of batches before each but the first), minimising
  ``vae_loss(x_l) + vae_loss(x_u) + adversary_param * (BCE(D(mu_l), 1) + BCE(D(mu_u), 1))``
  with ``vae_loss(x) = MSE(recon, x) + beta * KLD``, MSE a mean over every element and KLD
  ``-0.5 * sum(1 + logvar - mu^2 - exp(logvar))`` a *sum* over the batch and latent (the
  official scale, kept);
- ``adversary_steps`` discriminator steps (the VAE run without gradients, still in training
  mode, so its BatchNorm statistics and noise draws go on as in the official loop), minimising
  ``BCE(D(mu_l), 1) + BCE(D(mu_u), 0)``; Adam, lr 5e-4 for both.

The task model is not part of this loop (the official loop interleaves one task-model step per
iteration, which touches neither the VAE nor the discriminator): the cycle trains it as usual.

Differences from the official code, each for a stated reason:

- Width: the official VAE has 128-256-512-1024 channels (about 23M parameters, ~0.5 GMAC per
  32x32 image). ``width`` scales all four (official 128; default 16, 1/64 of the multiply-adds)
  so a CPU worker can train it. Inputs of any (C, H, W) are zero-padded to multiples of 16 (MNIST's
  28x28 -> 32x32), decoded at the padded size and cropped back; on 32x32 with ``width=128``
  the network is the official one layer for layer.
- Feature vectors (``mlp`` projects, frozen backbones' embeddings): an MLP VAE with the same
  losses (Linear-BatchNorm-ReLU blocks of 8w and 4w units mirroring the conv blocks), rather
  than refusing: VAAL only needs a VAE of the inputs, and nothing in it is image-specific.
- Scoring runs the VAE in eval mode (running BatchNorm statistics). The official sampler leaves
  it in training mode, so an item's score depends on which random batch it falls in; in eval
  mode a score is a function of the item, and sharding or batching cannot change it.
- Batches: each stream reshuffles per pass with ``default_rng`` and drops a trailing partial
  batch (the official unlabelled loader keeps it; a batch of one would break BatchNorm); a
  set smaller than ``batch_size`` is one batch (the official labelled loader, ``drop_last``,
  would yield nothing and loop for ever).
- Length: ``iterations = max(1, (M + N) * epochs // batch_size)`` as the official
  ``num_images * train_epochs // batch_size`` (default 100 epochs there; here a parameter).

Every random draw comes from the seed: the weights (global RNG forked), the batches
(``default_rng``), the reparameterisation noise (a CPU ``torch.Generator``, drawn in the order
of the official ``torch.randn`` calls and moved to the device, so a GPU run draws the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Streams of the cycle seed, apart from every other consumer of it.
_INIT_STREAM = 0x56414931  # "VAI1"
_BATCH_STREAM = 0x56414232  # "VAB2"
_NOISE_STREAM = 0x56414E33  # "VAN3"
_PAD = 16  # four stride-2 encoder blocks
DISC_WIDTH = 512  # official Discriminator: z -> 512 -> 512 -> 1


def sub_seed(seed: int, stream: int) -> int:
    """A 31-bit seed of its own for (seed, stream)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0] & 0x7FFFFFFF)


def _padded(n: int) -> int:
    return max(_PAD, -(-n // _PAD) * _PAD)


class View(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.view(len(x), *self.shape)


class VAE(nn.Module):
    """``forward(x (B, *input_shape)) -> (recon (B, *input_shape), z, mu, logvar (B, z_dim))``.

    ``noise``: a callable ``shape -> Tensor`` giving the standard normal draws of the
    reparameterisation (set by ``train_vaal``; None = ``torch.randn``, as the official code).
    """

    encoder: nn.Sequential
    decoder: nn.Sequential
    fc_mu: nn.Linear
    fc_logvar: nn.Linear

    def __init__(self, input_shape: Sequence[int], z_dim: int, width: int) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.z_dim = z_dim
        self.noise: Callable[[tuple[int, ...]], Tensor] | None = None

    def _pad(self, x: Tensor) -> Tensor:
        return x

    def _crop(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h = self.encoder(self._pad(x))
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        z = self.reparameterize(mu, logvar)
        return self._crop(self.decoder(z)), z, mu, logvar

    def encode_mu(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> (B, z_dim) latent means, no noise drawn (scoring)."""
        return self.fc_mu(self.encoder(self._pad(x)))

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        std = (0.5 * logvar).exp()
        eps = torch.randn(*mu.size()) if self.noise is None else self.noise(tuple(mu.shape))
        return eps.to(mu.device, mu.dtype) * std + mu


class ConvVAE(VAE):
    """The official ``model.VAE`` with channels w, 2w, 4w, 8w (official w = 128) on (C, H, W)
    zero-padded to multiples of 16: encoder 4x [conv 4/2/1 (no bias), BN, ReLU] -> (8w, H/16,
    W/16) flattened; fc_mu, fc_logvar; decoder Linear(z, 8w * H/8 * W/8), 3x [convT 4/2/1 (no
    bias), BN, ReLU], convT 1x1 to C; output cropped to (H, W)."""

    def __init__(self, input_shape: Sequence[int], z_dim: int, width: int) -> None:
        super().__init__(input_shape, z_dim, width)
        c, h, w = self.input_shape
        self.ph, self.pw = _padded(h), _padded(w)
        ch = [width, 2 * width, 4 * width, 8 * width]
        enc: list[nn.Module] = []
        prev = c
        for out in ch:
            enc += [nn.Conv2d(prev, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
            prev = out
        flat = ch[3] * (self.ph // 16) * (self.pw // 16)
        self.encoder = nn.Sequential(*enc, View(flat))
        self.fc_mu = nn.Linear(flat, z_dim)
        self.fc_logvar = nn.Linear(flat, z_dim)
        dec: list[nn.Module] = [
            nn.Linear(z_dim, ch[3] * (self.ph // 8) * (self.pw // 8)),
            View(ch[3], self.ph // 8, self.pw // 8),
        ]
        for cin, cout in ((ch[3], ch[2]), (ch[2], ch[1]), (ch[1], ch[0])):
            dec += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]
        dec.append(nn.ConvTranspose2d(ch[0], c, 1))
        self.decoder = nn.Sequential(*dec)
        official_init(self)

    def _pad(self, x: Tensor) -> Tensor:
        h, w = self.input_shape[1:]
        if (h, w) == (self.ph, self.pw):
            return x
        top, left = (self.ph - h) // 2, (self.pw - w) // 2
        return F.pad(x, (left, self.pw - w - left, top, self.ph - h - top))

    def _crop(self, x: Tensor) -> Tensor:
        h, w = self.input_shape[1:]
        top, left = (self.ph - h) // 2, (self.pw - w) // 2
        return x[:, :, top : top + h, left : left + w]


class MlpVAE(VAE):
    """For feature vectors (D,): encoder [Linear, BN1d, ReLU] to 8w then 4w units; fc_mu,
    fc_logvar; decoder Linear(z, 4w), BN, ReLU, Linear(4w, 8w), BN, ReLU, Linear(8w, D)."""

    def __init__(self, input_shape: Sequence[int], z_dim: int, width: int) -> None:
        super().__init__(input_shape, z_dim, width)
        d = int(np.prod(self.input_shape))
        h1, h2 = 8 * width, 4 * width
        self.encoder = nn.Sequential(
            View(d),
            *(nn.Linear(d, h1), nn.BatchNorm1d(h1), nn.ReLU(True)),
            *(nn.Linear(h1, h2), nn.BatchNorm1d(h2), nn.ReLU(True)),
        )
        self.fc_mu = nn.Linear(h2, z_dim)
        self.fc_logvar = nn.Linear(h2, z_dim)
        self.decoder = nn.Sequential(
            *(nn.Linear(z_dim, h2), nn.BatchNorm1d(h2), nn.ReLU(True)),
            *(nn.Linear(h2, h1), nn.BatchNorm1d(h1), nn.ReLU(True)),
            nn.Linear(h1, d),
            View(*self.input_shape),
        )
        official_init(self)


class Discriminator(nn.Module):
    """The official one: (B, z) -> Linear 512, ReLU, Linear 512, ReLU, Linear 1, Sigmoid ->
    (B, 1) probability that the item is labelled."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim, DISC_WIDTH),
            nn.ReLU(True),
            nn.Linear(DISC_WIDTH, DISC_WIDTH),
            nn.ReLU(True),
            nn.Linear(DISC_WIDTH, 1),
            nn.Sigmoid(),
        )
        official_init(self)

    def forward(self, z: Tensor) -> Tensor:
        out: Tensor = self.net(z)
        return out


def official_init(net: nn.Module) -> None:
    """The official ``weight_init``: kaiming-normal weights and zero biases on the Linear and
    Conv2d layers *inside* the Sequential blocks, BatchNorm 1/0. ``fc_mu``/``fc_logvar`` (not
    in a block: the official ``kaiming_init(block)`` gets their name, a no-op) and the
    ConvTranspose2d layers (not Conv2d subclasses) keep PyTorch's default init."""
    for block in net.children():
        if not isinstance(block, nn.Sequential):
            continue
        for m in block:
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    m.bias.data.fill_(0)
            elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.fill_(0)


@dataclass(frozen=True)
class VaalConfig:
    """The strategy's hyper-parameters (official defaults in brackets)."""

    latent_dim: int = 32  # [32]
    beta: float = 1.0  # [1]
    adversary_param: float = 1.0  # [1], lambda2 in the paper
    vae_steps: int = 2  # [2]
    adversary_steps: int = 1  # [1]
    lr: float = 5e-4  # [5e-4], Adam, VAE and discriminator
    batch_size: int = 128  # [128]
    epochs: int = 10  # [100], passes over labelled + unlabelled
    width: int = 16  # [128], conv channels w, 2w, 4w, 8w


def build(input_shape: Sequence[int], config: VaalConfig, seed: int) -> tuple[VAE, Discriminator]:
    """A fresh VAE and discriminator, weights from ``seed`` alone (global RNG forked)."""
    shape = tuple(int(s) for s in input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sub_seed(seed, _INIT_STREAM))
        cls = ConvVAE if len(shape) == 3 else MlpVAE
        vae = cls(shape, config.latent_dim, config.width)
        disc = Discriminator(config.latent_dim)
    return vae, disc


def vae_loss(x: Tensor, recon: Tensor, mu: Tensor, logvar: Tensor, beta: float) -> Tensor:
    """The official ``Solver.vae_loss``: mean-squared error + beta * summed KL divergence."""
    mse = F.mse_loss(recon, x)
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return mse + beta * kld


def _bce(p: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy(p.view(-1), torch.full((len(p),), target, device=p.device))


def batch_stream(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless (b,) index batches, b = min(batch_size, n): a fresh permutation per pass, the
    trailing partial batch dropped."""
    b = min(batch_size, n)
    while True:
        perm = rng.permutation(n)
        for start in range(0, n - b + 1, b):
            yield perm[start : start + b]


@dataclass
class VaalTrained:
    vae: VAE
    discriminator: Discriminator
    iterations: int
    losses: tuple[float, float]  # last (VAE total, discriminator) loss


def iterations_of(n_items: int, config: VaalConfig) -> int:
    return max(1, n_items * config.epochs // config.batch_size)


def train_vaal(
    labelled: Tensor,
    unlabelled: Tensor,
    config: VaalConfig,
    seed: int,
    device: torch.device | None = None,
    *,
    nets: tuple[VAE, Discriminator] | None = None,
    batches: tuple[Iterator[np.ndarray], Iterator[np.ndarray]] | None = None,
    iterations: int | None = None,
) -> VaalTrained:
    """Train a VAE + discriminator as the official ``Solver.train`` does (without its task
    model). ``labelled`` (M, *shape), ``unlabelled`` (N, *shape) float32 on the CPU.

    ``nets``, ``batches`` (labelled, unlabelled index streams) and ``iterations`` override
    what the seed and config give (tests feed a transcription the same ones).
    """
    if len(labelled) < 2 or len(unlabelled) < 2:
        raise ValueError(
            f"vaal needs at least 2 labelled and 2 unlabelled items (BatchNorm), got "
            f"{len(labelled)} and {len(unlabelled)}"
        )
    dev = device or torch.device("cpu")
    vae, disc = nets if nets is not None else build(labelled.shape[1:], config, seed)
    vae.to(dev)
    disc.to(dev)
    gen = torch.Generator().manual_seed(sub_seed(seed, _NOISE_STREAM))
    vae.noise = lambda shape: torch.randn(shape, generator=gen)
    if batches is None:
        rng = np.random.default_rng([seed, _BATCH_STREAM])
        batches = (
            batch_stream(len(labelled), config.batch_size, rng),
            batch_stream(len(unlabelled), config.batch_size, rng),
        )
    lab_stream, unlab_stream = batches
    steps = (
        iterations
        if iterations is not None
        else iterations_of(len(labelled) + len(unlabelled), config)
    )
    opt_vae = torch.optim.Adam(vae.parameters(), lr=config.lr)
    opt_disc = torch.optim.Adam(disc.parameters(), lr=config.lr)

    def draw() -> tuple[Tensor, Tensor]:
        return (
            labelled[torch.from_numpy(next(lab_stream))].to(dev),
            unlabelled[torch.from_numpy(next(unlab_stream))].to(dev),
        )

    vae.train()
    disc.train()
    total = dsc = torch.zeros(())
    try:
        for _ in range(steps):
            x_l, x_u = draw()
            for count in range(config.vae_steps):
                recon, _, mu, logvar = vae(x_l)
                unsup = vae_loss(x_l, recon, mu, logvar, config.beta)
                u_recon, _, u_mu, u_logvar = vae(x_u)
                transductive = vae_loss(x_u, u_recon, u_mu, u_logvar, config.beta)
                # The VAE is rewarded when the discriminator calls every item labelled.
                adv = _bce(disc(mu), 1.0) + _bce(disc(u_mu), 1.0)
                total = unsup + transductive + config.adversary_param * adv
                opt_vae.zero_grad()
                total.backward()
                opt_vae.step()
                if count < config.vae_steps - 1:
                    x_l, x_u = draw()
            for count in range(config.adversary_steps):
                with torch.no_grad():
                    _, _, mu, _ = vae(x_l)
                    _, _, u_mu, _ = vae(x_u)
                dsc = _bce(disc(mu), 1.0) + _bce(disc(u_mu), 0.0)
                opt_disc.zero_grad()
                dsc.backward()
                opt_disc.step()
                if count < config.adversary_steps - 1:
                    x_l, x_u = draw()
    finally:
        vae.noise = None
    return VaalTrained(vae, disc, steps, (float(total.item()), float(dsc.item())))


@torch.no_grad()
def unlabelled_probability(
    trained: VaalTrained, inputs: Tensor, device: torch.device | None = None, batch: int = 256
) -> np.ndarray:
    """(N, *shape) -> (N,) float64 ``1 - D(mu(x))``: the discriminator's probability that an
    item is unlabelled; the official sampler picks the lowest D(mu(x)), i.e. the highest of
    these. Eval mode (running BatchNorm statistics): a function of the item alone."""
    dev = device or torch.device("cpu")
    vae, disc = trained.vae.to(dev).eval(), trained.discriminator.to(dev).eval()
    out = []
    for start in range(0, len(inputs), batch):
        x = inputs[start : start + batch].to(dev)
        out.append(disc(vae.encode_mu(x)).view(-1).double().cpu())
    p = torch.cat(out).numpy() if out else np.zeros(0)
    return 1.0 - p
