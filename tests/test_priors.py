"""VampPrior, importance-weighted training, gated layers and the published test draw."""

import hashlib
import math

import keras
import numpy as np
import pytest
from keras import ops

from kvae import VAE, architectures, priors
from kvae_cli import build_parser
from kvae_cli.library import config_from_args
from kvae.data import pipeline
from kvae.data.protocol import evaluation_views, published_draw
from kvae.layers import Bound, GatedDense

# sha256 of np.packbits of the published test draw (uint8 {0, 1}, (10000, 28, 28, 1), C order).
PUBLISHED_TEST_SHA256 = "25f0d69b40ae46a7566c3c5fb8650d55ec964d5c10d88ced01e3afa36df0cb90"


def _model(prior="vamp", objective="elbo", iw_samples=1, latent_dim=3, seed=5, mlp_layer="gated", **kwargs):
    encoder, decoder = architectures.build(
        "mlp", (28, 28, 1), latent_dim, hidden=(32,), mlp_layer=mlp_layer, log_var_bounds=(-6, 2)
    )
    return VAE(encoder, decoder, prior=prior, num_pseudo_inputs=7, objective=objective, iw_samples=iw_samples,
               seed=seed, **kwargs)


@pytest.fixture(scope="module")
def x_small(splits):
    return pipeline.binarize_once(splits.x_train[:300])


# === The published draw ===


def test_the_published_draw_is_the_published_code_bit_for_bit(splits):
    val, test = published_draw(splits.x_val, splits.x_test)
    assert hashlib.sha256(np.packbits(test.astype(np.uint8)).tobytes()).hexdigest() == PUBLISHED_TEST_SHA256
    np.random.seed(777)  # the published code, on the global generator
    expected_val = np.random.binomial(1, splits.x_val.reshape(10_000, 784) / 255)
    expected_test = np.random.binomial(1, splits.x_test.reshape(10_000, 784) / 255)
    np.testing.assert_array_equal(val.reshape(10_000, 784), expected_val)
    np.testing.assert_array_equal(test.reshape(10_000, 784), expected_test)
    grey_val, grey_test = evaluation_views(splits.x_val, splits.x_test, binarize=False)
    np.testing.assert_array_equal(grey_test, splits.x_test / np.float32(255))


# === Layers ===


def test_gated_dense_is_linear_times_sigmoid_gate_and_round_trips():
    layer = GatedDense(3, name="g")
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = ops.convert_to_numpy(layer(x))
    w, b = (ops.convert_to_numpy(v) for v in (layer.kernel, layer.bias))
    both = x @ w + b
    np.testing.assert_allclose(out, both[:, :3] / (1 + np.exp(-both[:, 3:])), rtol=1e-5, atol=1e-6)
    clone = GatedDense.from_config(layer.get_config())
    assert clone.units == 3 and clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="Received: units=0"):
        GatedDense(0)


def test_bound_clips_and_checks_its_arguments():
    out = ops.convert_to_numpy(Bound(-6, 2)(np.array([[-9.0, 0.5, 3.0]], np.float32)))
    np.testing.assert_array_equal(out, [[-6.0, 0.5, 2.0]])
    assert Bound.from_config(Bound(-6, 2).get_config()).high == 2.0
    with pytest.raises(ValueError, match="Received: low=2, high=1"):
        Bound(2, 1)


# === VampPrior ===


def _brute_force_log_mixture(z, means, log_vars):
    """log (1/K) sum_k prod_d N(z_d | mu_kd, var_kd), one component and one dimension at a time."""
    out = []
    for zi in z.astype(np.float64):
        densities = []
        for mu, lv in zip(means.astype(np.float64), log_vars.astype(np.float64)):
            var = np.exp(lv)
            densities.append(np.prod(np.exp(-((zi - mu) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)))
        out.append(np.log(np.mean(densities)))
    return np.array(out)


def test_vamp_log_prior_matches_a_brute_force_mixture_density():
    model = _model()
    rng = np.random.default_rng(1)
    model.pseudo_inputs.assign(rng.random((7, 28, 28, 1)).astype(np.float32))
    means, log_vars = (ops.convert_to_numpy(t) for t in model.prior_components())
    assert means.shape == (7, 3) and np.ptp(means, axis=0).min() > 0  # distinct components
    z = (means[rng.integers(0, 7, 20)] + rng.standard_normal((20, 3))).astype(np.float32)
    expected = _brute_force_log_mixture(z, means, log_vars)
    np.testing.assert_allclose(ops.convert_to_numpy(model.log_prior(z)), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(priors.log_mixture_numpy(z, means, log_vars), expected, rtol=1e-10, atol=1e-9)
    # In blocks of 3 rows (the last one short) it is the same function.
    np.testing.assert_allclose(priors.log_mixture_numpy(z, means, log_vars, rows=3), expected, rtol=1e-10, atol=1e-9)
    # One component at the origin with unit variance is N(0, I).
    zero = np.zeros((1, 3), np.float32)
    np.testing.assert_allclose(priors.log_mixture_numpy(z, zero, zero), priors.log_standard_normal_numpy(z), atol=1e-9)


def test_vamp_samples_come_from_the_components_and_repeat_with_the_seed():
    model = _model()
    model.pseudo_inputs.assign(np.random.default_rng(2).random((7, 28, 28, 1)).astype(np.float32))
    means, log_vars = (ops.convert_to_numpy(t) for t in model.prior_components())
    rng = np.random.default_rng(9)  # the documented order: eps, then the components
    eps = rng.standard_normal((6, 3), dtype=np.float32)
    component = rng.integers(0, 7, size=6)
    expected = means[component] + np.exp(0.5 * log_vars[component]) * eps
    np.testing.assert_allclose(model.sample_prior(6, seed=9), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.sample(4, seed=3), model.sample(4, seed=3))
    assert not np.array_equal(model.sample(4, seed=3), model.sample(4, seed=4))


def test_pseudo_inputs_are_trained_and_the_model_round_trips(tmp_path, x_small):
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = ops.convert_to_numpy(model.pseudo_inputs).copy()
    assert any(v is model.pseudo_inputs for v in model.trainable_variables)
    model.fit(x_small, epochs=1, batch_size=100, verbose=0)
    after = ops.convert_to_numpy(model.pseudo_inputs)
    assert np.abs(after - before).max() > 1e-3  # the optimizer moved them
    path = tmp_path / "vamp.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.prior, loaded.num_pseudo_inputs, loaded.objective) == ("vamp", 7, "elbo")
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.sample(5, seed=1), model.sample(5, seed=1), atol=1e-6)
    # Training goes on from the saved optimizer state.
    weights = [w.copy() for w in loaded.get_weights()]
    history = loaded.fit(x_small, epochs=1, batch_size=100, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(weights, loaded.get_weights()))


# === Importance-weighted training ===


def _loss(model, x):
    model(x)  # builds
    state = model.sampling.seed_generator.state
    state.assign(np.array([123, 0], dtype=state.dtype))  # the same noise for every model compared
    out = model(x)
    return float(sum(ops.convert_to_numpy(loss) for loss in model.losses)), out


def test_iwae_with_one_sample_is_the_negative_elbo(x_small):
    for prior in ("normal", "vamp"):
        elbo = _model(prior=prior, objective="elbo")
        iwae = _model(prior=prior, objective="iwae", iw_samples=1)
        elbo(x_small[:2])
        iwae(x_small[:2])
        iwae.set_weights(elbo.get_weights())
        x = x_small[:50]
        loss_iwae, out = _loss(iwae, x)
        # The same draw: recon + (log q - log p) per example, averaged.
        expected = float(np.mean(ops.convert_to_numpy(out["reconstruction_nll"] + out["kl"])))
        assert loss_iwae == pytest.approx(expected, rel=1e-5)
        if prior == "vamp":  # the ELBO model's KL is the same one-sample estimate there
            loss_elbo, _ = _loss(elbo, x)
            assert loss_iwae == pytest.approx(loss_elbo, rel=1e-5)


def test_the_bound_tightens_as_k_grows_on_a_fixed_model(x_small):
    base = _model(prior="normal", objective="iwae", iw_samples=1, latent_dim=4)
    base.compile(optimizer=keras.optimizers.Adam(1e-2))
    base.fit(x_small, epochs=8, batch_size=50, verbose=0)
    losses = {}
    for k in (1, 5, 50):
        model = _model(prior="normal", objective="iwae", iw_samples=k, latent_dim=4)
        model(x_small[:2])
        model.set_weights(base.get_weights())
        losses[k] = np.mean([_loss(model, x_small[i : i + 100])[0] for i in range(0, 300, 100)])
    assert losses[1] > losses[5] > losses[50] and losses[1] - losses[50] > 2.0, losses


def test_iwae_history_reports_the_bound_and_the_elbo(x_small):
    model = _model(objective="iwae", iw_samples=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x_small, epochs=1, batch_size=100, verbose=0).history
    assert {"negative_iw_bound", "negative_elbo", "reconstruction_loss", "kl_loss"} <= set(history)
    assert history["loss"][0] == pytest.approx(history["negative_iw_bound"][0], rel=1e-5)
    assert history["negative_iw_bound"][0] < history["negative_elbo"][0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(prior="gaussian"), "Received: prior='gaussian'"),
    (dict(objective="elbo", iw_samples=3), "Received: iw_samples=3"),
    (dict(objective="iwae", iw_samples=0), "Received: iw_samples=0"),
    (dict(prior="vamp", free_bits=0.1), "Received: free_bits=0.1"),
])
def test_bad_model_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(**kwargs)


# === Recipes from the command line ===


def test_typed_flags_beat_the_preset_even_at_their_default_value():
    def parse(argv):
        return build_parser(argv).parse_args(argv)

    config = config_from_args(parse(["train", "--preset", "fashion-mlp", "--epochs", "10"]))
    assert config.epochs == 10 and config.mlp_layer == "gated"  # 10 is TrainConfig's default
    config = config_from_args(parse(["train", "--epochs", "300"]))
    assert config.epochs == 300 and config.mlp_layer == "dense"
    config = config_from_args(parse(["train", "--preset", "fashion-vamp", "--no-keep-best", "--iw-samples", "1"]))
    assert (config.prior, config.keep_best, config.iw_samples, config.log_var_bounds) == ("vamp", False, 1, [-6.0, 2.0])


def test_a_vamp_run_keeps_its_best_epoch_draws_its_pictures_and_evaluates(tmp_path, splits):
    import json

    from kvae.runs import evaluate_run
    from tests.conftest import _train_tiny

    result = _train_tiny(
        tmp_path, splits, train_limit=600, epochs=3, mlp_layer="gated", mlp_hidden_units=[32], log_var_bounds=[-6, 2],
        prior="vamp", num_pseudo_inputs=20, objective="iwae", iw_samples=2, keep_best=True, warmup_epochs=2,
    )
    for name in ("samples.png", "pseudo_inputs.png", "best.keras", "model.keras"):
        assert (tmp_path / name).stat().st_size > 0, name
    state = json.loads((tmp_path / "state.json").read_text())
    rows = state["history"]
    best = min(range(len(rows)), key=lambda i: rows[i]["val_negative_iw_bound"])
    assert state["best"]["epoch"] == best + 1
    assert state["best"]["value"] == pytest.approx(rows[best]["val_negative_iw_bound"])
    # The pseudo-inputs started as training images, not noise: grey levels of real clothes.
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.prior == "vamp" and loaded.num_pseudo_inputs == 20
    evaluation = evaluate_run(str(tmp_path), k=10, limit=20, verbose=0)
    assert evaluation["prior"] == "vamp" and evaluation["test_draw"] == "published-777"
    assert np.isfinite(evaluation["nll"]) and evaluation["nll"] <= evaluation["negative_elbo"] + 1.0


def test_early_stopping_stops_after_patience_epochs_without_a_better_bound(tmp_path):
    from kvae.callbacks import EpochCheckpoint, load_state

    model = _model(prior="normal")
    model(np.zeros((1, 28, 28, 1), np.float32))
    checkpoint = EpochCheckpoint(str(tmp_path), monitor="val_negative_elbo", keep_best=True, patience=2)
    checkpoint.set_model(model)
    for epoch, value in enumerate([300.0, 290.0, 295.0, 291.0]):
        model.stop_training = False
        checkpoint.on_epoch_end(epoch, {"loss": 1.0, "val_negative_elbo": value})
        if epoch < 3:
            assert not model.stop_training, epoch
    assert model.stop_training and checkpoint.stopped_early
    state = load_state(tmp_path)
    assert state["best"] == {"epoch": 2, "value": 290.0} and state["stopped_early"] is True
