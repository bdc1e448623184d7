"""The VAE on real Fashion-MNIST slices: objective, metrics, methods, serialization."""

import keras
import numpy as np
import pytest

from kvae import VAE, Autoencoder, architectures
from kvae.data import pipeline


def _vae(latent_dim=4, **kwargs):
    encoder, decoder = architectures.build("mlp", (28, 28, 1), latent_dim)
    return VAE(encoder, decoder, seed=1, **kwargs)


@pytest.fixture(scope="module")
def x_small(splits):
    return pipeline.binarize_once(splits.x_train[:1000])


def test_history_reports_loss_as_reconstruction_plus_beta_kl(x_small):
    model = _vae(beta=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x_small, epochs=2, batch_size=100, verbose=0).history
    assert {"loss", "reconstruction_loss", "kl_loss"} <= set(history)
    for loss, recon, kl in zip(history["loss"], history["reconstruction_loss"], history["kl_loss"]):
        assert loss == pytest.approx(recon + 0.5 * kl, rel=1e-5)


def test_loss_falls_on_real_data(x_small):
    model = _vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    losses = model.fit(x_small, epochs=4, batch_size=50, verbose=0).history["loss"]
    assert losses[-1] < losses[0] - 50, losses  # ~543 nats at chance; it learns quickly


def test_tiny_run_history_satisfies_the_identity(tiny_run):
    _, result = tiny_run
    for row in result.history:
        assert row["loss"] == pytest.approx(row["reconstruction_loss"] + row["kl_loss"], rel=1e-5)
        assert row["val_loss"] == pytest.approx(row["val_reconstruction_loss"] + row["val_kl_loss"], rel=1e-5)


def test_call_returns_the_named_parts(x_small):
    out = _vae(latent_dim=3)(x_small[:5])
    assert out["reconstruction"].shape == (5, 28, 28, 1)
    for key in ("z_mean", "z_log_var", "z"):
        assert out[key].shape == (5, 3)
    assert out["kl"].shape == (5,)


def test_methods_return_arrays_of_the_right_shapes(x_small):
    model = _vae(latent_dim=3)
    z_mean, z_log_var = model.encode(x_small[:7])
    assert z_mean.shape == z_log_var.shape == (7, 3)
    x_mean = model.decode(z_mean)
    assert x_mean.shape == (7, 28, 28, 1) and 0 <= x_mean.min() and x_mean.max() <= 1
    np.testing.assert_array_equal(model.reconstruct(x_small[:7]), x_mean)
    np.testing.assert_array_equal(model.sample(5, seed=3), model.sample(5, seed=3))
    assert not np.allclose(model.sample(5, seed=3), model.sample(5, seed=4))


def test_keras_round_trip_gives_equal_outputs_and_continues_training(tmp_path, x_small):
    model = _vae(likelihood="gaussian", gaussian_variance="learned", free_bits=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_small, epochs=1, batch_size=100, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # safe_mode: no lambdas anywhere
    assert isinstance(restored, VAE)
    assert (restored.likelihood, restored.free_bits, restored.seed) == ("gaussian", 0.1, 1)
    np.testing.assert_array_equal(restored.reconstruct(x_small[:16]), model.reconstruct(x_small[:16]))
    np.testing.assert_array_equal(restored.sample(4, seed=0), model.sample(4, seed=0))
    assert float(restored.log_var) == float(model.log_var)
    assert int(restored.optimizer.iterations) == 10  # optimizer state came along
    history = restored.fit(x_small, epochs=1, batch_size=100, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert int(restored.optimizer.iterations) == 20


def test_bad_arguments_name_the_problem():
    encoder, decoder = architectures.build("mlp", (28, 28, 1), 2)
    with pytest.raises(ValueError, match="Received: likelihood='poisson'"):
        VAE(encoder, decoder, likelihood="poisson")
    with pytest.raises(ValueError, match="Received: beta=-1"):
        VAE(encoder, decoder, beta=-1)
    with pytest.raises(ValueError, match="Received: gaussian_variance=0"):
        VAE(encoder, decoder, likelihood="gaussian", gaussian_variance=0)
    with pytest.raises(ValueError, match="without `loss`"):
        VAE(encoder, decoder).compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="Received: architecture='rnn'"):
        architectures.build("rnn", (28, 28, 1), 2)
    with pytest.raises(ValueError, match="divisible by 4"):
        architectures.build("conv", (30, 30, 1), 2)
    with pytest.raises(ValueError, match="Received: n=0"):
        VAE(encoder, decoder).sample(0)


def test_conv_architecture_trains_and_mirrors_shapes(x_small):
    encoder, decoder = architectures.build("conv", (28, 28, 1), 2)
    model = VAE(encoder, decoder, seed=0)
    model.compile(optimizer="adam")
    history = model.fit(x_small[:200], epochs=1, batch_size=50, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert model.decode(np.zeros((2, 2))).shape == (2, 28, 28, 1)


def test_mlp_hidden_units_set_the_encoder_and_the_mirrored_decoder():
    encoder, decoder = architectures.build("mlp", (28, 28, 1), 2, hidden=[32, 16])
    units = lambda m: [layer.units for layer in m.layers if layer.name.startswith("dense_")]  # noqa: E731
    assert (units(encoder), units(decoder)) == ([32, 16], [16, 32])
    assert decoder.output_shape == (None, 28, 28, 1)


def test_autoencoder_learns_codes_and_round_trips(tmp_path, splits):
    x = splits.x_train[:1000].astype("float32") / 255.0
    encoder, decoder = architectures.build("mlp", (28, 28, 1), 8, output_activation="sigmoid", variational=False)
    model = Autoencoder(encoder, decoder)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    losses = model.fit(x, epochs=3, batch_size=50, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    assert model.encode(x[:3]).shape == (3, 8)
    model.save(tmp_path / "ae.keras")
    restored = keras.saving.load_model(tmp_path / "ae.keras")
    np.testing.assert_array_equal(restored.reconstruct(x[:5]), model.reconstruct(x[:5]))


def test_custom_encoder_and_decoder_are_checked_at_construction(tmp_path, x_small):
    x_in = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(x_in)
    encoder = keras.Model(x_in, [keras.layers.Dense(3)(h), keras.layers.Dense(3)(h)])
    z_in = keras.Input((3,))
    decoder = keras.Model(z_in, keras.layers.Reshape((28, 28, 1))(keras.layers.Dense(784)(z_in)))
    model = VAE(encoder, decoder, seed=0)  # any Keras models with the right signatures
    model.compile(optimizer="adam")
    model.fit(x_small[:100], epochs=1, batch_size=50, verbose=0)
    model.save(tmp_path / "custom.keras")
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "custom.keras").reconstruct(x_small[:4]),
                                  model.reconstruct(x_small[:4]))

    z4 = keras.Input((4,))
    decoder4 = keras.Model(z4, keras.layers.Reshape((28, 28, 1))(keras.layers.Dense(784)(z4)))
    with pytest.raises(ValueError, match=r"map z of shape \(3,\).*Received: inputs \[\(4,\)\]"):
        VAE(encoder, decoder4)
    z3 = keras.Input((3,))
    decoder_small = keras.Model(z3, keras.layers.Reshape((14, 14, 4))(keras.layers.Dense(784)(z3)))
    with pytest.raises(ValueError, match=r"input's shape \(28, 28, 1\)"):
        VAE(encoder, decoder_small)
    one_output = keras.Model(x_in, keras.layers.Dense(3)(h))
    with pytest.raises(ValueError, match="two outputs"):
        VAE(one_output, decoder)
