"""kvae inside ordinary Keras workflows: your own models and tf.data datasets, the standard callbacks,
mixed-precision policies (loss terms in float32, float32 export), on real Fashion-MNIST slices."""

import csv
import os

import keras
import numpy as np
import pytest

from kvae import VAE, architectures
from kvae.data import pipeline
from kvae.precision import float32_twin, policy_scope

# bfloat16 keeps 8 significant bits: each rounding is off by at most 2^-9 of the value, and a
# few layers of them give errors of a few 2^-8 relative to the activations' size. Measured on
# these models: 0.4% of max |z_mean|, 0.0017 on x_mean probabilities. The tests allow 4 * 2^-8.
BF16_RELATIVE_TOLERANCE = 4 * 2.0**-8
EXPORT_TOLERANCE = 1e-5  # float32 twin vs its ONNX/SavedModel export: the same float32 math


@pytest.fixture(scope="module")
def x_small(splits):
    return pipeline.binarize_once(splits.x_train[:1000])


def _vae(latent_dim=4, architecture="mlp", hidden=(200, 200)):
    encoder, decoder = architectures.build(architecture, (28, 28, 1), latent_dim, hidden=hidden)
    model = VAE(encoder, decoder, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


# Your own data and models


def test_fit_takes_a_dataset_of_images_or_of_image_label_pairs(x_small, splits):
    import tensorflow as tf

    model = _vae()
    images = tf.data.Dataset.from_tensor_slices(x_small).batch(100)
    pairs = tf.data.Dataset.from_tensor_slices((x_small, splits.y_train[:1000])).batch(100)
    loss_x = model.fit(images, epochs=1, verbose=0).history["loss"]
    loss_xy = model.fit(pairs, validation_data=pairs, epochs=1, verbose=0).history  # y is ignored
    assert np.isfinite(loss_x[0]) and loss_xy["loss"][0] < loss_x[0]
    assert {"val_loss", "val_kl_loss", "val_reconstruction_loss"} <= set(loss_xy)


def test_sequential_and_wrapped_subclassed_models_are_accepted(x_small):
    @keras.saving.register_keras_serializable(package="kvae_tests")
    class TwoHeads(keras.Model):  # a subclassed model: no symbolic inputs of its own
        def __init__(self, latent_dim, **kwargs):
            super().__init__(**kwargs)
            self.latent_dim = latent_dim
            self.hidden = keras.layers.Dense(64, activation="relu")
            self.mean, self.log_var = keras.layers.Dense(latent_dim), keras.layers.Dense(latent_dim)

        def call(self, x):
            h = self.hidden(keras.ops.reshape(x, (-1, 784)))
            return self.mean(h), self.log_var(h)

        def get_config(self):
            return {**super().get_config(), "latent_dim": self.latent_dim}

    x_in = keras.Input((28, 28, 1))
    with pytest.raises(ValueError, match="wrap a subclassed model as keras.Model"):
        VAE(TwoHeads(3), keras.Sequential([keras.Input((3,)), keras.layers.Dense(784), keras.layers.Reshape((28, 28, 1))]))
    encoder = keras.Model(x_in, TwoHeads(3)(x_in))  # wrapped: now it has inputs and outputs
    decoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(784), keras.layers.Reshape((28, 28, 1))])
    model = VAE(encoder, decoder, seed=0)
    model.compile(optimizer="adam")
    assert np.isfinite(model.fit(x_small[:200], epochs=1, batch_size=100, verbose=0).history["loss"][0])


def test_custom_architecture_saves_reloads_and_exports_like_a_built_in_one(x_small, splits, tmp_path):
    import kvae_export
    from kvae_serving import Runtime

    x_in = keras.Input((28, 28, 1), name="pixels")
    h = keras.layers.Conv2D(8, 5, strides=2, padding="same", activation="elu")(x_in)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Concatenate()([h, keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(x_in))])
    encoder = keras.Model(x_in, [keras.layers.Dense(5)(h), keras.layers.Dense(5, activation="tanh")(h)])
    z_in = keras.Input((5,), name="code")
    h = keras.layers.Dense(7 * 7 * 8, activation="elu")(z_in)
    h = keras.layers.Reshape((7, 7, 8))(h)
    h = keras.layers.UpSampling2D(4)(h)
    decoder = keras.Model(z_in, keras.layers.Conv2D(1, 3, padding="same")(h))
    model = VAE(encoder, decoder, likelihood="bernoulli", beta=0.5, seed=0)
    model.compile(optimizer="adam")
    model.fit(x_small, epochs=1, batch_size=100, verbose=0)
    model.save(tmp_path / "custom.keras")
    restored = keras.saving.load_model(tmp_path / "custom.keras")
    np.testing.assert_array_equal(restored.sample(4, seed=0), model.sample(4, seed=0))

    check = splits.x_test[:64].astype(np.float32) / 255.0
    result = kvae_export.export_vae(restored, tmp_path / "artifacts", check_images=check)
    assert result.manifest["latent_dim"] == 5 and result.manifest["input_shape"] == [28, 28, 1]
    runtime = Runtime(tmp_path / "artifacts")
    assert list(runtime.models["encoder"]["inputs"]) == ["x"]  # the contract's names, not the model's
    np.testing.assert_allclose(runtime.sample(8, seed=2), model.sample(8, seed=2), atol=1e-5, rtol=0)
    np.testing.assert_allclose(runtime.encode(check)[0], model.encode(check)[0], atol=1e-5, rtol=0)


# Standard callbacks


def test_standard_keras_callbacks(x_small, tmp_path):
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices(x_small[:800]).batch(100)
    val = tf.data.Dataset.from_tensor_slices(x_small[800:]).batch(100)
    model = _vae()
    # min_delta=1e9: no epoch after the first counts as an improvement, so both react from epoch 2 on.
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=1e9, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0, min_delta=1e9, min_lr=1e-5),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch-{epoch}.keras")),
        keras.callbacks.TensorBoard(str(tmp_path / "logs")),
        keras.callbacks.CSVLogger(str(tmp_path / "history.csv")),
    ]
    history = model.fit(train, validation_data=val, epochs=10, callbacks=callbacks, verbose=0).history
    assert len(history["loss"]) == 3  # EarlyStopping: stopped after `patience` epochs without improvement
    # ReduceLROnPlateau halves the rate at the end of epochs 2 and 3 (logs show the rate each epoch ran with).
    assert history["learning_rate"] == pytest.approx([1e-3, 1e-3, 5e-4])
    assert float(model.optimizer.learning_rate) == pytest.approx(2.5e-4)
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {"loss", "kl_loss", "reconstruction_loss", "val_loss"} <= set(rows[0])
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(tmp_path / "logs") for name in files)
    assert {"epoch-1.keras", "epoch-2.keras", "epoch-3.keras"} <= set(os.listdir(tmp_path))  # ModelCheckpoint
    first = keras.saving.load_model(tmp_path / "epoch-1.keras")
    assert isinstance(first, VAE) and int(first.optimizer.iterations) == 8
    np.testing.assert_array_equal(first.sample(3, seed=0), model.sample(3, seed=0))  # restore_best_weights: epoch 1


def test_early_stopping_on_a_conditional_vae_with_numpy_inputs(splits):
    encoder, decoder = architectures.build("mlp", (28, 28, 1), 4, num_classes=10)
    model = VAE(encoder, decoder, num_classes=10, seed=0)
    model.compile(optimizer="adam")
    x, y = pipeline.binarize_once(splits.x_train[:600]), splits.y_train[:600]
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=1e9)
    history = model.fit({"x": x, "y": y}, validation_split=0.2, batch_size=100, epochs=5, callbacks=[stop], verbose=0)
    assert len(history.history["val_loss"]) == 2


# Mixed precision


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_loss_terms(policy, x_small, tmp_path):
    with policy_scope(policy):
        # One small MLP layer: 16-bit convolutions are slow on CPU (the export test below trains a conv one), and
        # float16 matmuls are too: 12 steps of the 200-200 MLP took 30 s here, of one 32-unit layer 5 s.
        model = _vae(hidden=(32,))
    assert keras.config.dtype_policy().name == "float32"  # the scope restored the global policy
    compute = {layer.compute_dtype for layer in model.encoder.layers + model.decoder.layers if layer.weights}
    assert compute == {policy.split("_")[1]}
    out = model({"x": x_small[:8]})
    for name in ("z_mean", "z_log_var", "z", "reconstruction", "reconstruction_nll", "kl"):
        assert out[name].dtype == "float32", name
    assert all(loss.dtype == "float32" for loss in model.losses)
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # Keras adds loss scaling
    history = model.fit(x_small[:600], epochs=2, batch_size=100, verbose=0).history
    assert all(np.isfinite(history["loss"])) and history["loss"][1] < history["loss"][0]
    assert history["loss"][1] == pytest.approx(history["reconstruction_loss"][1] + history["kl_loss"][1], rel=1e-5)
    model.save(tmp_path / "mixed.keras")
    restored = keras.saving.load_model(tmp_path / "mixed.keras")
    assert restored.encoder.layers[-1].compute_dtype == model.encoder.layers[-1].compute_dtype
    np.testing.assert_array_equal(restored.sample(2, seed=0), model.sample(2, seed=0))


def test_mixed_bfloat16_exports_float32_graphs(x_small, splits, tmp_path):
    import onnx
    import tensorflow as tf

    import kvae_export
    from kvae_serving import Runtime

    with policy_scope("mixed_bfloat16"):
        model = _vae(latent_dim=6, architecture="conv")
    model.fit(x_small, epochs=1, batch_size=100, verbose=0)
    twin = float32_twin(model)
    assert {layer.compute_dtype for layer in twin.encoder.layers + twin.decoder.layers} == {"float32"}
    assert float32_twin(twin) is twin
    check = splits.x_test[:64].astype(np.float32) / 255.0
    result = kvae_export.export_vae(model, tmp_path / "artifacts", check_images=check)
    assert all(d <= EXPORT_TOLERANCE for backends in result.max_abs_diff.values() for b in backends.values() for d in b.values())

    float32 = onnx.TensorProto.FLOAT
    for name in ("encoder", "decoder"):
        graph = onnx.load(tmp_path / "artifacts" / "onnx" / name / "1" / "model.onnx").graph
        assert {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]} == {float32}, name
        signature = tf.saved_model.load(str(tmp_path / "artifacts" / "saved_model" / name / "1")).signatures["serving_default"]
        assert {s.dtype for s in signature.structured_input_signature[1].values()} == {tf.float32}
        assert {s.dtype for s in signature.structured_outputs.values()} == {tf.float32}

    # ONNX = the float32 Keras computation with the trained weights, within float32 rounding...
    runtime = Runtime(tmp_path / "artifacts")
    x = splits.x_test[64:320].astype(np.float32) / 255.0
    z = np.random.default_rng(1).standard_normal((256, 6), dtype=np.float32)
    np.testing.assert_allclose(runtime.encode(x)[0], twin.encode(x)[0], atol=EXPORT_TOLERANCE, rtol=0)
    np.testing.assert_allclose(runtime.decode(z), twin.decode(z), atol=EXPORT_TOLERANCE, rtol=0)
    # ... and the bfloat16 model up to bfloat16's rounding.
    z_mean_bf16 = model.encode(x)[0]
    scale = max(1.0, float(np.abs(z_mean_bf16).max()))
    assert np.abs(runtime.encode(x)[0] - z_mean_bf16).max() <= BF16_RELATIVE_TOLERANCE * scale
    assert np.abs(runtime.decode(z) - model.decode(z)).max() <= BF16_RELATIVE_TOLERANCE  # probabilities, scale 1


def test_train_cli_with_a_dtype_policy(tmp_path, splits):
    from kvae.config import TrainConfig
    from kvae.data import from_arrays
    from kvae.train import train

    small = from_arrays(splits.x_train[:1200], splits.x_test[:500], splits.y_train[:1200], splits.y_test[:500], 200)
    config = TrainConfig(run_dir=str(tmp_path / "run"), epochs=1, latent_dim=4, dtype_policy="mixed_bfloat16")
    result = train(config, splits=small, verbose=0)
    assert result.model.encoder.layers[-1].compute_dtype == "bfloat16"
    assert np.isfinite(result.test_metrics["negative_elbo"])
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="dtype_policy must be one of"):
        TrainConfig(dtype_policy="float64")
