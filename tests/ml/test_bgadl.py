"""BGADL's generative augmentation (worker/ml/bgadl.py) against an independent transcription
of the official code (toantm/BGADL at 5d82f50, ``demo_mnist.py``: ``encoder``, ``generator``,
``reparameterize``, ``latent_loss``, ``VAEACGAN.train``; ``utils.initialize_weights``).

The transcription keeps the official loop's VAE part as written and removes, marked, what is
left out by design (the discriminator D, the classifier C, the samples G(z, y) and the ACGAN
terms): given the same initial weights, batches and noise (``normal_()`` on the global RNG,
seeded as our generator), training ends with the same weights. Also: BALD's scores are
``bald``'s, the seed decides everything, and the samples reach training through ``fit``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.optim as optim
from torch.optim import lr_scheduler

from worker.ml import bgadl
from worker.ml.ceal import fit
from worker.ml.data import ArrayDataset, one_hot
from worker.ml.models import build_model
from worker.ml.networks import augmentation_for
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.strategy_params import ParamsError, check_model_fits
from worker.ml.training import TrainConfig

# ------------------------------------------------------------- the official code, transcribed


def initialize_weights(net):  # type: ignore[no-untyped-def]
    for m in net.modules():
        if isinstance(m, nn.Conv2d):  # noqa: SIM114 (as written there)
            m.weight.data.normal_(0, 0.02)
            m.bias.data.zero_()
        elif isinstance(m, nn.ConvTranspose2d):  # noqa: SIM114
            m.weight.data.normal_(0, 0.02)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.02)
            m.bias.data.zero_()


class encoder(nn.Module):  # noqa: N801 (as named there)
    def __init__(self):  # type: ignore[no-untyped-def]
        super().__init__()
        self.output_dim = 100
        self.input_height = 28
        self.input_width = 28
        self.input_dim = 1
        self.conv = nn.Sequential(
            nn.Conv2d(self.input_dim, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=2),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 1, 4, stride=2, padding=1),
            nn.ReLU(),
        )
        self.fc1 = nn.Sequential(nn.Linear(1, 1024), nn.ReLU())
        self.fc21 = nn.Sequential(nn.Linear(1024, self.output_dim), nn.Sigmoid())
        self.fc22 = nn.Sequential(nn.Linear(1024, self.output_dim), nn.Sigmoid())
        initialize_weights(self)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.conv(x)
        x = self.fc1(x)
        mu = self.fc21(x)
        log_var = self.fc22(x)
        return mu, log_var


def reparameterize(mu, log_var):  # type: ignore[no-untyped-def]
    std = log_var.mul(0.5).exp_()
    eps = std.data.new(std.size()).normal_()  # (Variable() dropped: PyTorch 0.3)
    return eps.mul(std).add_(mu)


def latent_loss(mu, log_var):  # type: ignore[no-untyped-def]
    std = log_var.mul(0.5).exp_()
    mean_sq = mu * mu
    stddev_sq = std * std
    return 0.5 * torch.mean(mean_sq + stddev_sq - torch.log(stddev_sq) - 1)


class generator(nn.Module):  # noqa: N801
    def __init__(self):  # type: ignore[no-untyped-def]
        super().__init__()
        self.input_height = 28
        self.input_width = 28
        self.input_dim = 100 + 10
        self.output_dim = 1
        self.fc = nn.Sequential(
            nn.Linear(self.input_dim, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, 128 * (self.input_height // 4) * (self.input_width // 4)),
            nn.BatchNorm1d(128 * (self.input_height // 4) * (self.input_width // 4)),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, self.output_dim, 4, 2, 1),
            nn.Sigmoid(),
        )
        initialize_weights(self)

    def forward(self, input, label):  # type: ignore[no-untyped-def]
        x = torch.cat([input, label], 1)
        x = self.fc(x)
        x = x.view(-1, 128, (self.input_height // 4), (self.input_width // 4))
        x = self.deconv(x)
        return x


def official_train(E, G, data_X, data_Y, epochs, batch_size, order):  # type: ignore[no-untyped-def]  # noqa: N803
    """``VAEACGAN.train``, the E and G updates; ``order`` (test change): each epoch's item
    order, the official one being the stored order (identity)."""
    E_optimizer = optim.Adadelta(E.parameters(), lr=1.0, rho=0.9, eps=1e-6)  # noqa: N806
    G_optimizer = optim.Adadelta(G.parameters(), lr=1.0, rho=0.9, eps=1e-6)  # noqa: N806
    E_scheduler = lr_scheduler.StepLR(E_optimizer, step_size=8, gamma=0.5, last_epoch=-1)  # noqa: N806
    G_scheduler = lr_scheduler.StepLR(G_optimizer, step_size=8, gamma=0.5, last_epoch=-1)  # noqa: N806
    MSE_loss = nn.MSELoss()  # noqa: N806
    E.train()
    for epoch in range(epochs):
        G.train()
        E_scheduler.step()  # (official order: the schedulers step first)
        G_scheduler.step()
        X, Y = data_X[order[epoch]], data_Y[order[epoch]]  # noqa: N806
        for iter in range(len(X) // batch_size):
            x_ = X[iter * batch_size : (iter + 1) * batch_size]
            y_vec_ = Y[iter * batch_size : (iter + 1) * batch_size]
            # (z_ = torch.randn(...) removed: it feeds only G(z_, y), left out)
            E_optimizer.zero_grad()
            mu, log_var = E(x_)
            noise = reparameterize(mu, log_var)
            noise = noise.view(batch_size, 100)
            output = G(noise, y_vec_)
            ll = latent_loss(mu, log_var)
            E_loss = MSE_loss(output, x_)  # noqa: N806
            E_loss += ll  # noqa: N806
            E_loss.backward(retain_graph=True)
            E_optimizer.step()
            G_optimizer.zero_grad()
            # (G_ = G(z_, y), D_fake, C_fake and their BCE / CE terms removed)
            mu, log_var = E(x_)
            noise = reparameterize(mu, log_var)
            noise = noise.view(batch_size, 100)
            G_dec = G(noise, y_vec_)  # noqa: N806
            G_dec_loss = MSE_loss(G_dec, x_)  # noqa: N806
            G_loss = 0.75 * G_dec_loss  # noqa: N806
            G_loss.backward(retain_graph=True)
            G_optimizer.step()
            # (the D and C step removed)


# ------------------------------------------------------------------------------- the tests


@pytest.mark.filterwarnings("ignore::UserWarning")  # the official scheduler order
def test_training_equals_the_official_vae_part_on_mnist_shapes() -> None:
    """28x28, 10 classes, z = 100: the official encoder and generator load our initial
    weights; after 10 epochs (the lr halves at epoch 7, as the official schedulers do)
    every weight and BatchNorm statistic agrees."""
    seed, m, b, epochs = 2, 8, 4, 10
    g = torch.Generator().manual_seed(0)
    x = torch.rand(m, 1, 28, 28, generator=g)
    y = torch.from_numpy(one_hot(np.arange(m) % 10, 10))
    config = bgadl.BgadlConfig(latent_dim=100, epochs=epochs, batch_size=b)
    enc, gen = bgadl.build((1, 28, 28), 10, config, seed)
    ref_e, ref_g = encoder(), generator()
    ref_e.load_state_dict(enc.state_dict())
    ref_g.load_state_dict(gen.state_dict())
    rng = np.random.default_rng(9)
    orders = [rng.permutation(m) for _ in range(epochs)]
    ours = [[o[:4], o[4:]] for o in orders]
    bgadl.train_vae(x, y, config, seed, nets=(enc, gen), batches=iter(ours))
    torch.manual_seed(bgadl.sub_seed(seed, bgadl._NOISE_STREAM))
    official_train(ref_e, ref_g, x, y, epochs, b, orders)
    for mine, theirs in ((enc, ref_e), (gen, ref_g)):
        a, r = mine.state_dict(), theirs.state_dict()
        assert list(a) == list(r)
        for key in a:
            torch.testing.assert_close(a[key], r[key], rtol=1e-5, atol=1e-6, msg=key)


def test_the_generated_sample_is_the_officials_reconstruction() -> None:
    """x' = G(reparameterize(E(x)), y) as the official code forms G_dec, in eval mode."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 1, 28, 28, generator=g)
    y = torch.from_numpy(one_hot(np.array([0, 3, 3, 9, 1]), 10))
    enc, gen = bgadl.build((1, 28, 28), 10, bgadl.BgadlConfig(), 0)
    trained = bgadl.TrainedVAE(enc, gen, (0.0, 0.0))
    ours = bgadl.reconstruct(trained, x, y, seed=4)
    ref_e, ref_g = encoder(), generator()
    ref_e.load_state_dict(enc.state_dict())
    ref_g.load_state_dict(gen.state_dict())
    ref_e.eval()
    ref_g.eval()
    torch.manual_seed(bgadl.sub_seed(4, bgadl._GEN_STREAM))
    with torch.no_grad():
        mu, log_var = ref_e(x)
        theirs = ref_g(reparameterize(mu, log_var).view(5, 100), y)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_the_latent_loss_and_the_initialisation_are_the_officials() -> None:
    mu, lv = torch.rand(4, 7), torch.rand(4, 7)
    torch.testing.assert_close(bgadl.latent_loss(mu, lv), latent_loss(mu, lv.clone()))
    enc, gen = bgadl.build((1, 28, 28), 10, bgadl.BgadlConfig(), 0)
    w = gen.deconv[0].weight
    assert float(w.detach().std()) == pytest.approx(0.02, rel=0.05)
    assert float(enc.fc1[0].bias.detach().abs().max()) == 0.0


def test_generate_keeps_the_data_range_and_is_seeded() -> None:
    x = np.random.default_rng(0).random((6, 1, 18, 18)).astype(np.float32) * 4 - 2  # [-2, 2]
    t = one_hot(np.array([0, 1, 2, 0, 1, 2]), 3)
    config = bgadl.BgadlConfig(latent_dim=5, epochs=2, batch_size=3)
    a = bgadl.generate(x, t, config, seed=1)
    b = bgadl.generate(x, t, config, seed=1)
    c = bgadl.generate(x, t, config, seed=2)
    assert a.inputs.shape == x.shape  # 18x18: padded to 20x20 for G, cropped back
    assert a.inputs.min() >= -2
    assert a.inputs.max() <= 2
    assert np.array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)
    assert np.array_equal(a.targets, t)
    assert a.sources.tolist() == list(range(6))


def test_fit_trains_on_labelled_and_generated_items() -> None:
    """The augmenter sees the labelled Dataset, and training sees both sets."""
    spec = ModelSpec.from_dict(
        {"name": "small_cnn", "input_shape": [1, 16, 16], "num_classes": 3,
         "hparams": {"epochs": 1, "batch_size": 4}}
    )  # fmt: skip
    x = np.random.default_rng(0).random((6, 1, 16, 16)).astype(np.float32)
    labelled = ArrayDataset(x, one_hot(np.array([0, 1, 2, 0, 1, 2]), 3))
    strategy = get_strategy("bgadl", latent_dim=4, epochs=1, batch_size=3)
    augmenter = augmentation_for(strategy, seed=3)
    assert augmenter is not None
    assert augmentation_for(get_strategy("bald"), 3) is None
    seen: list[int] = []
    model = build_model(spec, seed=0)
    model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    _results, pseudo = fit(
        model, labelled, TrainConfig.from_hparams(spec.hparams), seed=0, options=None,
        cycle_index=0, candidates=None, pseudo_dataset=None, augment=augmenter,  # type: ignore[arg-type]
    )  # fmt: skip
    assert pseudo is None
    assert augmenter.generated is not None
    assert len(augmenter.generated) == 6
    assert sum(seen) == 12  # 6 labelled + 6 generated, one epoch


def test_the_strategy_scores_as_bald_and_needs_images_and_dropout() -> None:
    from tests.ml.strategy_world import make_world

    world = make_world(get_strategy("bald", mc_samples=5))
    ctx = world.ctx(seed=3)
    bald = get_strategy("bald", mc_samples=5).compute(ctx)["scores"]
    ours = get_strategy("bgadl", mc_samples=5).compute(ctx)["scores"]
    assert np.array_equal(bald, ours)
    cnn = {"name": "small_cnn", "input_shape": [1, 28, 28], "hparams": {}}
    check_model_fits("acquire", "bgadl", cnn)
    for spec, key in (
        ({"name": "mlp", "input_shape": [6], "hparams": {}}, "image_input"),
        (
            {"name": "pretrained", "input_shape": [3, 32, 32], "hparams": {"dropout": 0.2}},
            "image_input",
        ),
        ({"name": "resnet18", "input_shape": [3, 32, 32], "hparams": {}}, "dropout"),
    ):
        with pytest.raises(ParamsError) as err:
            check_model_fits("acquire", "bgadl", spec)
        assert err.value.key == key
