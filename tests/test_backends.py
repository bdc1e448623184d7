"""The same VAE trains on Keras's PyTorch (and, if installed, JAX) backend and exports from TensorFlow."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras

import kvae  # noqa: F401  (registers the VAE class for load_model)
import numpy as np
import pytest

WORKER = Path(__file__).with_name("backend_worker.py")


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed (CI tests the torch backend)"))])
def test_train_on_another_backend_then_export_under_tensorflow(backend, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["backend"] == backend
    losses = result["history"]["loss"]
    assert losses[-1] < losses[0] - 20, losses  # it learned on real data
    history, beta = result["history"], result["beta"]
    assert beta == 0.5
    for loss, reconstruction, kl in zip(history["loss"], history["reconstruction_loss"], history["kl_loss"]):
        assert kl > 1.0 and reconstruction > 100  # both terms are there (and the KL has not collapsed)
        assert loss == pytest.approx(reconstruction + beta * kl, rel=1e-5, abs=1e-3)  # the objective, term by term
    assert "needs KERAS_BACKEND=tensorflow" in result["export_error"]

    # Weights trained there load here (TensorFlow backend) and decode the same.
    assert keras.backend.backend() == "tensorflow"
    model = keras.saving.load_model(tmp_path / "model.keras")
    z = np.load(tmp_path / "z.npy")
    np.testing.assert_allclose(model.decode(z), np.load(tmp_path / "decoded.npy"), atol=1e-5)

    from kvae_export import export_vae
    from kvae.data import load_dataset

    x = load_dataset().x_test[:32].astype("float32") / 255.0
    exported = export_vae(model, tmp_path / "artifacts", check_images=x)
    assert (tmp_path / "artifacts" / "onnx" / "decoder" / "1" / "model.onnx").exists()
    assert exported.manifest["latent_dim"] == 4
