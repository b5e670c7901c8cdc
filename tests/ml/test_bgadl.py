"""BGADL's generative augmentation (worker/ml/bgadl.py), the VAE part (``generator="vae"``),
against the independent transcription of the official code in ``tests/ml/bgadl_official.py``.

That transcription's ``official_train`` keeps the official loop's VAE part as written and
removes, marked, the ACGAN (the discriminator D, the classifier C, the samples G(z, y) and the
ACGAN terms; ``test_bgadl_acgan.py`` checks the whole loop): given the same initial weights,
batches and noise (``normal_()`` on the global RNG, seeded as our generator), training ends
with the same weights. Also: BALD's scores are ``bald``'s, the seed decides everything, and the
samples reach training through ``fit``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ml.bgadl_official import encoder, generator, latent_loss, official_train, reparameterize
from worker.ml import bgadl
from worker.ml.ceal import fit
from worker.ml.data import ArrayDataset, one_hot
from worker.ml.models import build_model
from worker.ml.networks import augmentation_for
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.strategy_params import ParamsError, check_model_fits
from worker.ml.training import TrainConfig

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
    config = bgadl.BgadlConfig(latent_dim=5, epochs=2, batch_size=3, generator="vae")
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
    assert not a.from_noise.any()
    assert len(a.losses) == 2


def test_fit_trains_on_labelled_and_generated_items() -> None:
    """The augmenter sees the labelled Dataset, and training sees both sets."""
    spec = ModelSpec.from_dict(
        {"name": "small_cnn", "input_shape": [1, 16, 16], "num_classes": 3,
         "hparams": {"epochs": 1, "batch_size": 4}}
    )  # fmt: skip
    x = np.random.default_rng(0).random((6, 1, 16, 16)).astype(np.float32)
    labelled = ArrayDataset(x, one_hot(np.array([0, 1, 2, 0, 1, 2]), 3))
    strategy = get_strategy("bgadl", latent_dim=4, epochs=1, batch_size=3, generator="vae")
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
