"""VAAL (worker/ml/vaal.py) against an independent transcription of the official code
(sinhasam/vaal at 67263f3: ``model.py``, ``solver.py``, ``sampler.py``), on small inputs.

The transcription below is the official code with only what modern PyTorch or the test needs
changed, each marked: the task model's step removed (it touches neither network), the data
loaders replaced by the same index batches the implementation draws, BCE targets shaped like
the predictions (PyTorch 0.4 compared them element by element with a warning; today it
raises), and the sampler run with the VAE in eval mode (our stated deviation: the official
sampler leaves it in training mode). Given the same initial weights, batches and noise
(the official ``torch.randn`` on the global RNG, seeded as our generator), training ends with
the same weights and the sampler ranks alike.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.init as init

from tests.shared_data import load_shared
from worker.ml.data import TensorPool
from worker.ml.models import build_model
from worker.ml.spec import ModelSpec
from worker.ml.strategies import ScoringContext, get_strategy
from worker.ml.strategies.base import merge_shards, top_b
from worker.ml.vaal import (
    _NOISE_STREAM,
    ConvVAE,
    MlpVAE,
    VaalConfig,
    batch_stream,
    build,
    sub_seed,
    train_vaal,
    unlabelled_probability,
    vae_loss,
)

# ------------------------------------------------------------- the official code, transcribed


class View(nn.Module):
    def __init__(self, size):  # type: ignore[no-untyped-def]
        super().__init__()
        self.size = size

    def forward(self, tensor):  # type: ignore[no-untyped-def]
        return tensor.view(self.size)


def kaiming_init(m):  # type: ignore[no-untyped-def]
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        init.kaiming_normal_(m.weight)
        if m.bias is not None:
            m.bias.data.fill_(0)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.weight.data.fill_(1)
        if m.bias is not None:
            m.bias.data.fill_(0)


class OfficialVAE(nn.Module):
    def __init__(self, z_dim=32, nc=3):  # type: ignore[no-untyped-def]
        super().__init__()
        self.z_dim = z_dim
        self.nc = nc
        self.encoder = nn.Sequential(
            nn.Conv2d(nc, 128, 4, 2, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(True),
            nn.Conv2d(128, 256, 4, 2, 1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(True),
            nn.Conv2d(256, 512, 4, 2, 1, bias=False),
            nn.BatchNorm2d(512),
            nn.ReLU(True),
            nn.Conv2d(512, 1024, 4, 2, 1, bias=False),
            nn.BatchNorm2d(1024),
            nn.ReLU(True),
            View((-1, 1024 * 2 * 2)),
        )
        self.fc_mu = nn.Linear(1024 * 2 * 2, z_dim)
        self.fc_logvar = nn.Linear(1024 * 2 * 2, z_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, 1024 * 4 * 4),
            View((-1, 1024, 4, 4)),
            nn.ConvTranspose2d(1024, 512, 4, 2, 1, bias=False),
            nn.BatchNorm2d(512),
            nn.ReLU(True),
            nn.ConvTranspose2d(512, 256, 4, 2, 1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(True),
            nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(True),
            nn.ConvTranspose2d(128, nc, 1),
        )
        self.weight_init()

    def weight_init(self):  # type: ignore[no-untyped-def]
        for block in self._modules:
            try:
                for m in self._modules[block]:
                    kaiming_init(m)
            except TypeError:  # official: a bare except; fc_mu is not iterable
                kaiming_init(block)

    def forward(self, x):  # type: ignore[no-untyped-def]
        z = self._encode(x)
        mu, logvar = self.fc_mu(z), self.fc_logvar(z)
        z = self.reparameterize(mu, logvar)
        x_recon = self._decode(z)
        return x_recon, z, mu, logvar

    def reparameterize(self, mu, logvar):  # type: ignore[no-untyped-def]
        stds = (0.5 * logvar).exp()
        epsilon = torch.randn(*mu.size())
        latents = epsilon * stds + mu
        return latents

    def _encode(self, x):  # type: ignore[no-untyped-def]
        return self.encoder(x)

    def _decode(self, z):  # type: ignore[no-untyped-def]
        return self.decoder(z)


class OfficialDiscriminator(nn.Module):
    def __init__(self, z_dim=10):  # type: ignore[no-untyped-def]
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(
            nn.Linear(z_dim, 512),
            nn.ReLU(True),
            nn.Linear(512, 512),
            nn.ReLU(True),
            nn.Linear(512, 1),
            nn.Sigmoid(),
        )

    def forward(self, z):  # type: ignore[no-untyped-def]
        return self.net(z)


class OfficialSolver:
    """``solver.Solver``: train() without the task model; read_data over given batches."""

    def __init__(self, args):  # type: ignore[no-untyped-def]
        self.args = args
        self.bce_loss = nn.BCELoss()
        self.mse_loss = nn.MSELoss()

    def read_data(self, x, batches):  # type: ignore[no-untyped-def]
        for idx in batches:  # test change: the implementation's own index batches
            yield x[torch.from_numpy(idx)]

    def train(self, labelled, lab_batches, unlabelled, unlab_batches, vae, discriminator):  # type: ignore[no-untyped-def]
        labeled_data = self.read_data(labelled, lab_batches)
        unlabeled_data = self.read_data(unlabelled, unlab_batches)
        optim_vae = torch.optim.Adam(vae.parameters(), lr=5e-4)
        optim_discriminator = torch.optim.Adam(discriminator.parameters(), lr=5e-4)
        vae.train()
        discriminator.train()
        for _iter_count in range(self.args.train_iterations):
            labeled_imgs = next(labeled_data)
            unlabeled_imgs = next(unlabeled_data)
            # (task_model step removed)
            for count in range(self.args.num_vae_steps):
                recon, _z, mu, logvar = vae(labeled_imgs)
                unsup_loss = self.vae_loss(labeled_imgs, recon, mu, logvar, self.args.beta)
                unlab_recon, _unlab_z, unlab_mu, unlab_logvar = vae(unlabeled_imgs)
                transductive_loss = self.vae_loss(
                    unlabeled_imgs, unlab_recon, unlab_mu, unlab_logvar, self.args.beta
                )
                labeled_preds = discriminator(mu)
                unlabeled_preds = discriminator(unlab_mu)
                lab_real_preds = torch.ones(labeled_imgs.size(0))
                unlab_real_preds = torch.ones(unlabeled_imgs.size(0))
                dsc_loss = self.bce_loss(
                    labeled_preds, lab_real_preds.view_as(labeled_preds)
                ) + self.bce_loss(unlabeled_preds, unlab_real_preds.view_as(unlabeled_preds))
                total_vae_loss = (
                    unsup_loss + transductive_loss + self.args.adversary_param * dsc_loss
                )
                optim_vae.zero_grad()
                total_vae_loss.backward()
                optim_vae.step()
                if count < (self.args.num_vae_steps - 1):
                    labeled_imgs = next(labeled_data)
                    unlabeled_imgs = next(unlabeled_data)
            for count in range(self.args.num_adv_steps):
                with torch.no_grad():
                    _, _, mu, _ = vae(labeled_imgs)
                    _, _, unlab_mu, _ = vae(unlabeled_imgs)
                labeled_preds = discriminator(mu)
                unlabeled_preds = discriminator(unlab_mu)
                lab_real_preds = torch.ones(labeled_imgs.size(0))
                unlab_fake_preds = torch.zeros(unlabeled_imgs.size(0))
                dsc_loss = self.bce_loss(
                    labeled_preds, lab_real_preds.view_as(labeled_preds)
                ) + self.bce_loss(unlabeled_preds, unlab_fake_preds.view_as(unlabeled_preds))
                optim_discriminator.zero_grad()
                dsc_loss.backward()
                optim_discriminator.step()
                if count < (self.args.num_adv_steps - 1):
                    labeled_imgs = next(labeled_data)
                    unlabeled_imgs = next(unlabeled_data)
        return vae, discriminator

    def vae_loss(self, x, recon, mu, logvar, beta):  # type: ignore[no-untyped-def]
        MSE = self.mse_loss(recon, x)  # noqa: N806 (as written there)
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())  # noqa: N806
        KLD = KLD * beta  # noqa: N806
        return MSE + KLD


def official_sample(vae, discriminator, data, budget):  # type: ignore[no-untyped-def]
    """``sampler.AdversarySampler.sample``."""
    all_preds = []
    all_indices = []
    for images, _, indices in data:
        with torch.no_grad():
            _, _, mu, _ = vae(images)
            preds = discriminator(mu)
        preds = preds.cpu().data
        all_preds.extend(preds)
        all_indices.extend(indices)
    all_preds = torch.stack(all_preds)
    all_preds = all_preds.view(-1)
    all_preds *= -1
    _, querry_indices = torch.topk(all_preds, int(budget))
    querry_pool_indices = np.asarray(all_indices)[querry_indices]
    return querry_pool_indices


class Args:
    def __init__(self, **kw):  # type: ignore[no-untyped-def]
        self.__dict__.update(kw)


# ------------------------------------------------------------------------------- the tests


def _batches(n_lab: int, n_unlab: int, b: int, count: int, seed: int) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    lab, unlab = batch_stream(n_lab, b, rng), batch_stream(n_unlab, b, rng)
    return [next(lab) for _ in range(count)], [next(unlab) for _ in range(count)]


def _assert_same_weights(ours: nn.Module, theirs: nn.Module) -> None:
    mine, ref = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(ref)
    for key in mine:
        torch.testing.assert_close(mine[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize(
    ("vae_steps", "adv_steps", "beta", "adv"), [(2, 1, 1.0, 1.0), (1, 2, 0.5, 3.0)]
)
def test_training_equals_the_official_solver_at_the_official_size(
    vae_steps: int, adv_steps: int, beta: float, adv: float
) -> None:
    """The official VAE (128..1024 channels, 32x32) and discriminator: the implementation
    with ``width=128`` has the same layers, so the transcription loads its initial weights;
    two iterations later every weight and BatchNorm statistic agrees."""
    seed, z, b, iters = 3, 8, 3, 2
    config = VaalConfig(
        latent_dim=z, beta=beta, adversary_param=adv, vae_steps=vae_steps,
        adversary_steps=adv_steps, batch_size=b, width=128,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    labelled, unlabelled = (
        torch.rand(5, 3, 32, 32, generator=g),
        torch.rand(7, 3, 32, 32, generator=g),
    )
    vae, disc = build((3, 32, 32), config, seed)
    ref_vae, ref_disc = OfficialVAE(z, 3), OfficialDiscriminator(z)
    ref_vae.load_state_dict(vae.state_dict())
    ref_disc.load_state_dict(disc.state_dict())
    draws = iters * (vae_steps + adv_steps - 1)
    lab_b, unlab_b = _batches(5, 7, b, draws, seed=1)

    train_vaal(
        labelled, unlabelled, config, seed,
        nets=(vae, disc), batches=(iter(lab_b), iter(unlab_b)), iterations=iters,
    )  # fmt: skip
    torch.manual_seed(sub_seed(seed, _NOISE_STREAM))  # the official noise: the global RNG
    args = Args(
        train_iterations=iters, num_vae_steps=vae_steps, num_adv_steps=adv_steps,
        beta=beta, adversary_param=adv,
    )  # fmt: skip
    OfficialSolver(args).train(labelled, lab_b, unlabelled, unlab_b, ref_vae, ref_disc)
    _assert_same_weights(vae, ref_vae)
    _assert_same_weights(disc, ref_disc)


def test_the_initialisation_is_the_officials_kind() -> None:
    """Kaiming-normal on the blocks' Linear/Conv2d (zero bias), BatchNorm 1/0; fc_mu and
    fc_logvar and the transposed convolutions keep PyTorch's default, as in the official
    ``weight_init`` (whose ``kaiming_init(block)`` gets a name for fc_mu)."""
    vae, disc = build((3, 32, 32), VaalConfig(width=16, latent_dim=8), 0)
    torch.manual_seed(0)
    ref = OfficialVAE(8, 3)
    enc0 = vae.encoder[0].weight
    assert enc0.std().item() == pytest.approx((2.0 / (3 * 16)) ** 0.5, rel=0.15)
    assert float(vae.decoder[0].bias.detach().abs().max()) == 0.0
    assert float(vae.fc_mu.bias.abs().max()) > 0.0  # PyTorch's default, not zeroed
    assert float(ref.fc_mu.bias.abs().max()) > 0.0
    assert float(disc.net[0].bias.abs().max()) == 0.0
    bound = (1.0 / (vae.decoder[2].weight.shape[1] * 16)) ** 0.5  # default: U(+-1/sqrt(fan_in))
    assert float(vae.decoder[2].weight.abs().max()) <= bound + 1e-6


def test_vae_loss_is_the_officials() -> None:
    g = torch.Generator().manual_seed(1)
    x, r = torch.rand(4, 1, 5, 5, generator=g), torch.rand(4, 1, 5, 5, generator=g)
    mu, lv = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    ref = OfficialSolver(Args()).vae_loss(x, r, mu, lv, 0.7)
    torch.testing.assert_close(vae_loss(x, r, mu, lv, 0.7), ref, rtol=0, atol=0)
    # The KL term is a sum over the batch, not a mean (the official scale).
    kld = -0.5 * sum(float((1 + lv[i] - mu[i] ** 2 - lv[i].exp()).sum()) for i in range(4))
    assert float(vae_loss(x, x, mu, lv, 1.0)) == pytest.approx(kld, rel=1e-6)


def test_the_ranking_is_the_official_samplers() -> None:
    """Given the trained networks (eval mode, our stated deviation), the official sampler's
    picks, in its order, are top-B of 1 - D(mu)."""
    config = VaalConfig(latent_dim=6, width=4, batch_size=8, epochs=3)
    g = torch.Generator().manual_seed(2)
    labelled, unlabelled = (
        torch.rand(12, 1, 28, 28, generator=g),
        torch.rand(40, 1, 28, 28, generator=g),
    )
    trained = train_vaal(labelled, unlabelled, config, seed=5)
    scores = unlabelled_probability(trained, unlabelled, batch=16)
    ours = top_b(scores, 9, seed=5).indices
    trained.vae.eval()
    loader = [
        (unlabelled[s : s + 16], None, torch.arange(s, min(s + 16, 40))) for s in range(0, 40, 16)
    ]
    theirs = official_sample(trained.vae, trained.discriminator, loader, 9)
    assert len(set(np.round(scores, 12))) == 40  # no ties: the order is the score's alone
    assert ours.tolist() == [int(i) for i in theirs]


def test_mnist_sized_inputs_are_padded_and_cropped_back() -> None:
    vae = ConvVAE((1, 28, 28), 4, 2)
    x = torch.rand(3, 1, 28, 28)
    assert vae._pad(x).shape == (3, 1, 32, 32)
    assert torch.equal(vae._pad(x)[:, :, 2:30, 2:30], x)  # centred, zeros around
    recon, z, mu, logvar = vae(x)
    assert recon.shape == x.shape
    assert z.shape == mu.shape == logvar.shape == (3, 4)
    odd = ConvVAE((2, 20, 9), 4, 2)  # any size: padded to 32x16
    assert odd(torch.rand(2, 2, 20, 9))[0].shape == (2, 2, 20, 9)


def test_feature_vectors_get_an_mlp_vae() -> None:
    vae, _ = build((6,), VaalConfig(width=2, latent_dim=3), 0)
    assert isinstance(vae, MlpVAE)
    recon, _, mu, _ = vae(torch.rand(4, 6))
    assert recon.shape == (4, 6)
    assert mu.shape == (4, 3)


def _images(seed: int, n: int) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def _select(seed: int, lab: torch.Tensor, pool: torch.Tensor, budget: int = 5) -> tuple:
    strategy = get_strategy("vaal", epochs=2, width=2, latent_dim=4, batch_size=8)
    spec = ModelSpec.from_dict({"name": "small_cnn", "input_shape": [1, 16, 16], "num_classes": 2})
    ctx = ScoringContext(
        model=build_model(spec, seed=0), pool=TensorPool(pool, 8), labelled=TensorPool(lab, 8),
        device=torch.device("cpu"), seed=seed, batch_size=8,
    )  # fmt: skip
    sel = strategy.select(ctx, budget)
    return sel.indices.tolist(), sel.scores


def test_the_seed_decides_everything_and_the_global_rng_is_left_alone() -> None:
    lab, pool = _images(0, 10), _images(1, 30)
    state = torch.random.get_rng_state()
    first = _select(4, lab, pool)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(123)  # the global RNG plays no part
    again = _select(4, lab, pool)
    assert first[0] == again[0]
    assert np.array_equal(first[1], again[1])
    other = _select(5, lab, pool)
    assert not np.array_equal(first[1], other[1])


def test_compute_shards_like_the_whole_pool() -> None:
    pool = _images(1, 30)
    strategy = get_strategy("vaal")
    spec = ModelSpec.from_dict({"name": "small_cnn", "input_shape": [1, 16, 16], "num_classes": 2})
    model = build_model(spec, seed=0)

    def ctx(p: torch.Tensor, offset: int = 0) -> ScoringContext:
        return ScoringContext(model, TensorPool(p, 8), None, torch.device("cpu"), 0, 8, offset)

    whole = strategy.compute(ctx(pool))["inputs"]
    parts = merge_shards([strategy.compute(ctx(pool[a:b], a)) for a, b in ((0, 16), (16, 30))])
    assert np.array_equal(whole, parts["inputs"])
    assert whole.shape == (30, 1, 16, 16)


def test_it_selects_from_real_digits() -> None:
    """MNIST: labelled 0s and 1s; the pool holds 60 more 0-1 and 60 7-8 digits. The selection
    is B distinct candidates, scores are probabilities. No quality bound is asserted: at this
    scale (~100 iterations, a 4-wide VAE) the adversarial game does not separate the unseen
    classes (measured: 8 of the top 20 are 7s and 8s with the official adversary weight; 13
    with ``adversary_param=0``; chance 10), where the paper trains ~39,000 iterations."""
    data = load_shared("mnist10k.npz")
    images, labels = data["images"], data["labels"]
    rng = np.random.default_rng(0)
    seen = rng.permutation(np.flatnonzero(labels <= 1))
    unseen = rng.permutation(np.flatnonzero((labels == 7) | (labels == 8)))
    lab_rows, pool_rows = seen[:60], np.concatenate([seen[60:120], unseen[:60]])
    x = torch.from_numpy(images).float().div(255).unsqueeze(1)
    strategy = get_strategy("vaal", epochs=3, width=4, latent_dim=8, batch_size=32)
    spec = ModelSpec.from_dict({"name": "small_cnn", "input_shape": [1, 28, 28], "num_classes": 10})
    ctx = ScoringContext(
        model=build_model(spec, seed=0), pool=TensorPool(x[pool_rows], 32),
        labelled=TensorPool(x[lab_rows], 32), device=torch.device("cpu"), seed=0, batch_size=32,
    )  # fmt: skip
    sel = strategy.select(ctx, 20)
    assert len(set(sel.indices.tolist())) == 20
    assert sel.indices.max() < 120
    assert np.all((sel.scores >= 0) & (sel.scores <= 1))
    assert sel.scores[sel.indices].min() >= np.delete(sel.scores, sel.indices).max()
