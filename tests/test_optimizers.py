"""FusedAdam: Keras Adam's math in one kernel per variable."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from kvae import architectures
from kvae.optimizers import FusedAdam
from kvae.vae import VAE


@pytest.fixture(scope="module")
def x_small(splits):
    return (splits.x_train[:200] > 127).astype("float32")  # binarized real images


def _trained(optimizer, x):
    keras.utils.set_random_seed(0)
    encoder, decoder = architectures.build("mlp", (28, 28, 1), 4, hidden=[32])
    model = VAE(encoder, decoder, seed=0)
    model.compile(optimizer=optimizer)
    model.fit(x, epochs=2, batch_size=50, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize("lr", [1e-3, keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=8)])
def test_fused_adam_applies_keras_adams_update(lr):
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(50, 20)).astype("float32"), rng.normal(size=(20,)).astype("float32")]
    fused_vars, plain_vars = ([keras.Variable(w) for w in init] for _ in range(2))
    fused, plain = FusedAdam(lr), keras.optimizers.Adam(lr)
    for _ in range(10):
        # Gradients of very different scales, as a network's are.
        grads = [(rng.normal(size=w.shape) * 10.0 ** rng.integers(-6, 1, size=w.shape)).astype("float32") for w in init]
        fused.apply(grads, fused_vars)
        plain.apply(grads, plain_vars)
    for a, b in zip(fused_vars + fused.variables, plain_vars + plain.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # A formula error (a missing bias correction, say) would move w by about a learning rate per step.
    assert not np.allclose(np.asarray(fused_vars[0]), init[0], atol=1e-4)


def test_training_with_fused_adam_follows_keras_adam(x_small):
    fused = _trained(FusedAdam(1e-3), x_small)
    plain = _trained(keras.optimizers.Adam(1e-3), x_small)
    assert int(fused.optimizer.iterations) == int(plain.optimizer.iterations) == 8
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        # Rounding differences, slightly amplified by 8 steps through the model.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)


def test_fused_adam_saves_and_resumes(tmp_path, x_small):
    model = _trained(FusedAdam(1e-3), x_small[:100])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is FusedAdam and int(loaded.optimizer.iterations) == 4
    loaded.fit(x_small[:100], epochs=1, batch_size=50, verbose=0)
    assert int(loaded.optimizer.iterations) == 6


def test_a_kvae_train_checkpoint_loads_in_a_fresh_process_after_import_kvae(tiny_run):
    run_dir, _ = tiny_run  # trained by kvae.train.train, so its optimizer is FusedAdam
    code = (
        "import keras, kvae\n"
        f"m = keras.saving.load_model({str(run_dir / 'model.keras')!r})\n"
        "print(type(m.optimizer).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "FusedAdam"
