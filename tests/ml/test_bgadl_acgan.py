"""BGADL's full VAE-ACGAN (worker/ml/bgadl_acgan.py, ``generator="vae_acgan"``, the default)
against the plain transcription of the official ``VAEACGAN.train`` in
``tests/ml/bgadl_official.py``: given the same initial weights (ours loaded into the official
networks), the same batches and the same noise (z and the reparameterisation draws from the
global RNG, seeded as our stream), E, G, D and the auxiliary classifier end with the same
weights and BatchNorm statistics, and the generated samples are the official forms of them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ml.bgadl_official import (
    discriminator,
    encoder,
    generator,
    lenet,
    official_acgan_train,
    reparameterize,
    visualize_samples,
)
from worker.ml import bgadl, bgadl_acgan
from worker.ml.ceal import fit
from worker.ml.data import ArrayDataset, one_hot
from worker.ml.models import build_model
from worker.ml.networks import augmentation_for
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.training import TrainConfig


@pytest.mark.filterwarnings("ignore::UserWarning")  # the official scheduler order
def test_training_and_samples_equal_the_official_vae_acgan_on_mnist_shapes() -> None:
    """20 MNIST-like 28x28 images, 10 classes, z = 100, batches of 10 in our seeded order,
    5 epochs (the classifier's lr halves at the last, epoch 4, as the official schedulers do)."""
    seed, m, b, epochs = 3, 20, 10, 5
    g = torch.Generator().manual_seed(0)
    x = torch.rand(m, 1, 28, 28, generator=g)
    y = torch.from_numpy(one_hot(np.arange(m) % 10, 10))
    config = bgadl.BgadlConfig(latent_dim=100, epochs=epochs, batch_size=b)
    assert config.generator == "vae_acgan"
    nets = bgadl_acgan.build_acgan((1, 28, 28), 10, config, seed)
    ref = (encoder(), generator(), discriminator(), lenet())
    for mine, theirs in zip(nets.all(), ref, strict=True):
        theirs.load_state_dict(mine.state_dict())
    # The official order per epoch is the one our seeded batches take.
    rng = np.random.default_rng([seed, bgadl._BATCH_STREAM])
    orders = [np.concatenate(bgadl.epoch_batches(m, b, rng)) for _ in range(epochs)]
    trained = bgadl_acgan.train_vae_acgan(x, y, config, seed, nets=nets)
    torch.manual_seed(bgadl.sub_seed(seed, bgadl._NOISE_STREAM))
    losses = official_acgan_train(*ref, x, y, epochs, b, orders)
    for mine, theirs in zip(nets.all(), ref, strict=True):
        a, r = mine.state_dict(), theirs.state_dict()
        assert list(a) == list(r)
        for key in a:
            torch.testing.assert_close(a[key], r[key], rtol=1e-5, atol=1e-6, msg=key)
    np.testing.assert_allclose(trained.losses, losses, rtol=1e-5)
    # The samples: reconstructions as the official G_dec, and G(z, y) as the official draws
    # them (visualize_results(fix=False)), both from the trained networks in eval mode.
    ref_e, ref_g = ref[0].eval(), ref[1].eval()
    ours = bgadl.reconstruct(trained, x, y, seed=4)
    noisy = bgadl_acgan.sample(trained, y, seed=4)
    with torch.no_grad():
        torch.manual_seed(bgadl.sub_seed(4, bgadl._GEN_STREAM))
        mu, log_var = ref_e(x)
        theirs = ref_g(reparameterize(mu, log_var).view(m, 100), y)
        torch.manual_seed(bgadl.sub_seed(4, bgadl_acgan._SAMPLE_STREAM))
        theirs_noisy = visualize_samples(ref_g, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(noisy, theirs_noisy, rtol=1e-5, atol=1e-6)
    # E and G start as generator="vae" starts them: the modes differ in training alone.
    enc, gen = bgadl.build((1, 28, 28), 10, config, seed)
    fresh = bgadl_acgan.build_acgan((1, 28, 28), 10, config, seed)
    for a_net, b_net in ((enc, fresh.encoder), (gen, fresh.generator)):
        for p, q in zip(a_net.parameters(), b_net.parameters(), strict=True):
            assert torch.equal(p, q)


def test_generate_gives_a_reconstruction_and_a_sample_from_noise_per_item() -> None:
    """18x18 in [-2, 2] (padded to 20x20 for the networks, cropped back): 2M samples, the
    second M from noise with the items' labels, in the data's range, decided by the seed."""
    x = np.random.default_rng(0).random((6, 1, 18, 18)).astype(np.float32) * 4 - 2
    t = one_hot(np.array([0, 1, 2, 0, 1, 2]), 3)
    config = bgadl.BgadlConfig(latent_dim=5, epochs=2, batch_size=3)
    a = bgadl.generate(x, t, config, seed=1)
    b = bgadl.generate(x, t, config, seed=1)
    c = bgadl.generate(x, t, config, seed=2)
    vae = bgadl.generate(x, t, bgadl.BgadlConfig(5, 2, 3, generator="vae"), seed=1)
    assert a.inputs.shape == (12, 1, 18, 18)
    assert a.inputs.min() >= -2
    assert a.inputs.max() <= 2
    assert np.array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)
    assert a.sources.tolist() == [*range(6), *range(6)]
    assert a.from_noise.tolist() == [False] * 6 + [True] * 6
    assert np.array_equal(a.targets, np.concatenate([t, t]))
    assert len(a.losses) == 4
    assert np.isfinite(a.losses).all()
    # The adversarial and auxiliary terms change what G learns.
    assert not np.array_equal(a.inputs[:6], vae.inputs)
    record = bgadl.record(a, np.arange(100, 106))
    assert record["source_item_ids"].tolist() == [*range(100, 106), *range(100, 106)]
    assert record["from_noise"].sum() == 6


def test_fit_trains_on_labelled_reconstructions_and_samples_from_noise() -> None:
    """As the official classifier sees per epoch each real item, one G(e, y) and one G(z, y)
    with its label, the task model trains on M + 2M items (the default generator)."""
    spec = ModelSpec.from_dict(
        {"name": "small_cnn", "input_shape": [1, 16, 16], "num_classes": 3,
         "hparams": {"epochs": 1, "batch_size": 4}}
    )  # fmt: skip
    x = np.random.default_rng(0).random((6, 1, 16, 16)).astype(np.float32)
    labelled = ArrayDataset(x, one_hot(np.array([0, 1, 2, 0, 1, 2]), 3))
    strategy = get_strategy("bgadl", latent_dim=4, epochs=1, batch_size=3)
    assert strategy.generator == "vae_acgan"  # type: ignore[attr-defined]
    augmenter = augmentation_for(strategy, seed=3)
    assert augmenter is not None
    seen: list[int] = []
    model = build_model(spec, seed=0)
    model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    fit(
        model, labelled, TrainConfig.from_hparams(spec.hparams), seed=0, options=None,
        cycle_index=0, candidates=None, pseudo_dataset=None, augment=augmenter,  # type: ignore[arg-type]
    )  # fmt: skip
    assert augmenter.generated is not None
    assert len(augmenter.generated) == 12
    assert sum(seen) == 18  # 6 labelled + 6 reconstructions + 6 from noise, one epoch
