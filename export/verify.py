"""Proof that the written artifacts compute what the Keras model computes.

Keras (model.encoder, model.decoder + model.output_mean) is the reference;
the reloaded SavedModel and an onnxruntime CPU session must agree with it
within TOLERANCE (max absolute difference) on every output.
"""

import numpy as np

from export import saved_model
from export.errors import ExportError

TOLERANCE = 1e-5
CHECK_SEED = 0  # seed of the random latents the decoders are checked on
NUM_CHECK_LATENTS = 256


def check_latents(latent_dim):
    """(256, latent_dim) float32 draws of N(0, I), with the contract's sampling convention."""
    return np.random.default_rng(CHECK_SEED).standard_normal((NUM_CHECK_LATENTS, latent_dim), dtype=np.float32)


def check_labels(n, num_classes):
    """One-hot labels (n, C) cycling through the classes, or None for an unconditional model."""
    return None if num_classes is None else np.eye(num_classes, dtype=np.float32)[np.arange(n) % num_classes]


def keras_outputs(model, x, z, y_x=None, y_z=None):
    """The reference outputs, {"encoder": {...}, "decoder": {...}} of NumPy arrays (y_*: one-hot labels or None)."""
    z_mean, z_log_var = model.run_encoder(x, y_x)
    reconstruction = model.run_decoder(z, y_z)
    decoder = {"x_mean": np.asarray(model.output_mean(reconstruction))}
    if model.likelihood == "bernoulli":
        decoder["x_logits"] = np.asarray(reconstruction)  # the Bernoulli decoder's raw output is logits
    return {"encoder": {"z_mean": np.asarray(z_mean), "z_log_var": np.asarray(z_log_var)}, "decoder": decoder}


def run_onnx(path, inputs):
    """Runs an ONNX file on onnxruntime's CPU provider: dict of NumPy in, dict of NumPy out."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def verify(model, paths, x, z, y_x=None, y_z=None):
    """Checks both backends of both models against Keras.

    Args:
        model: the kvae VAE (float32).
        paths: {"encoder": {"saved_model": dir, "onnx": file}, "decoder": {...}}.
        x: check images (n, *input_shape) float32; z: check latents (m, latent_dim) float32.
        y_x, y_z: conditional models only: one-hot labels (n, C) of x and (m, C) of z.

    Returns {model: {backend: {output: max abs difference}}}; raises ExportError
    naming the model, output and backend when one differs by more than TOLERANCE.
    """
    expected = keras_outputs(model, x, z, y_x, y_z)
    inputs = {"encoder": {"x": x}, "decoder": {"z": z}}
    if y_x is not None:
        inputs["encoder"]["y"], inputs["decoder"]["y"] = y_x, y_z
    runners = {"saved_model": saved_model.run, "onnx": run_onnx}
    diffs = {}
    for name in ("encoder", "decoder"):
        diffs[name] = {}
        for backend, run in runners.items():
            got = run(paths[name][backend], inputs[name])
            diffs[name][backend] = compare(name, backend, expected[name], got)
    return diffs


def compare(model_name, backend, expected, got):
    """{output: max abs difference} of `got` against `expected`; ExportError if any is too large."""
    if sorted(got) != sorted(expected):
        raise ExportError(
            f"Verification failed: the {backend} {model_name} has outputs {sorted(got)}, expected {sorted(expected)}."
        )
    diffs = {}
    for name, want in expected.items():
        have = np.asarray(got[name])
        if have.shape != want.shape:
            raise ExportError(
                f"Verification failed: {model_name} output {name!r} from {backend} has shape {have.shape}, "
                f"Keras gives {want.shape}."
            )
        diff = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64))))
        if not diff <= TOLERANCE:  # also catches NaN
            raise ExportError(
                f"Verification failed: {model_name} output {name!r} from {backend} differs from Keras by "
                f"max abs {diff:.3g} (tolerance {TOLERANCE:g}); nothing was published."
            )
        diffs[name] = diff
    return diffs
