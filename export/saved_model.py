"""The exported models as tf.Modules with one named serving signature each.

A tf.function with a named TensorSpec input and a dict output gives the
SavedModel signature `serving_default` the tensor names of ARTIFACTS.md
(x -> z_mean, z_log_var; z -> x_mean[, x_logits]; conditional models take y,
one-hot [batch, C], as a second input of both; VampPrior models add
eps, component -> z and z -> log_pz). The same tf.functions are what tf2onnx
converts, so both formats come from one traced graph. Outputs are cast to
float32, the contract's only datatype.
"""

import math

import numpy as np
import tensorflow as tf

from kvae_contract import artifacts as names

from .errors import ExportError


class EncoderModule(tf.Module):
    """x (batch, *input_shape) float32 in [0, 1] [, y (batch, C) one-hot] -> {"z_mean", "z_log_var"}, each (batch, latent_dim)."""

    def __init__(self, encoder, input_shape, num_classes=None):
        super().__init__(name=names.ENCODER)
        self.encoder = encoder  # tracked, so its variables are saved
        specs = [tf.TensorSpec([None, *input_shape], tf.float32, name=names.X)] + _label_spec(num_classes)
        self.serve = tf.function(self._serve if num_classes is None else self._serve_conditional, input_signature=specs)

    def _serve(self, x):
        return self._outputs(self.encoder(x, training=False))

    def _serve_conditional(self, x, y):
        return self._outputs(self.encoder([x, y], training=False))

    @staticmethod
    def _outputs(encoded):
        z_mean, z_log_var = encoded
        return {names.Z_MEAN: tf.cast(z_mean, tf.float32), names.Z_LOG_VAR: tf.cast(z_log_var, tf.float32)}


class DecoderModule(tf.Module):
    """z (batch, latent_dim) float32 -> {"x_mean"[, "x_logits"]}, each (batch, *input_shape).

    For a Bernoulli decoder the Keras output is logits and x_mean = sigmoid(logits),
    as in VAE.output_mean; for a Gaussian one the output is already the mean.
    """

    def __init__(self, decoder, latent_dim, likelihood, num_classes=None):
        super().__init__(name=names.DECODER)
        self.decoder = decoder
        self.likelihood = likelihood
        specs = [tf.TensorSpec([None, latent_dim], tf.float32, name=names.Z)] + _label_spec(num_classes)
        self.serve = tf.function(self._serve if num_classes is None else self._serve_conditional, input_signature=specs)

    def _serve(self, z):
        return self._outputs(self.decoder(z, training=False))

    def _serve_conditional(self, z, y):
        return self._outputs(self.decoder([z, y], training=False))

    def _outputs(self, out):
        out = tf.cast(out, tf.float32)
        if self.likelihood == "bernoulli":
            return {names.X_MEAN: tf.sigmoid(out), names.X_LOGITS: out}
        return {names.X_MEAN: out}


class PriorModule(tf.Module):
    """The VampPrior's reparameterized draw, with its K components baked in as constants.

    eps (batch, latent_dim): N(0, I) noise already multiplied by the temperature;
    component (batch, K): one-hot rows choosing each row's mixture component ->
    {"z": component @ means + exp(0.5 * (component @ log_vars)) * eps}, (batch, latent_dim).

    With one-hot rows the two matmuls pick rows exactly (products by 1.0 and 0.0),
    so z equals means[c] + exp(log_vars[c] / 2) * eps; the randomness stays
    outside, seeded, and the graph holds no random op.
    """

    def __init__(self, means, log_vars, tensors):
        super().__init__(name=names.PRIOR)
        means, log_vars = _components(means, log_vars)
        eps, component = (_spec(t) for t in tensors["inputs"])
        (out,) = names.names(tensors, "outputs")

        def serve(eps, component):
            mean = tf.matmul(component, tf.constant(means))  # (batch, latent_dim)
            log_var = tf.matmul(component, tf.constant(log_vars))
            return {out: mean + tf.exp(0.5 * log_var) * eps}

        self.serve = tf.function(serve, input_signature=[eps, component])


class LogPriorModule(tf.Module):
    """log p(z) under the VampPrior, log (1/K) sum_k N(z | mu_k, diag exp(log_var_k)), components baked in.

    z (batch, latent_dim) -> {"log_pz": (batch,)}, nats. Per component the
    density is written as offset_k - 0.5 * sum_d ((z_d - mu_kd) / sigma_kd)^2,
    broadcast over (batch, K, latent_dim): no expansion of the square, whose
    cancellation costs float32 digits when variances are small (log_var -6
    gives 1/sigma^2 = 403). offset_k = -0.5 (sum_d log_var_kd + d log 2 pi) - log K
    and 1/sigma_k are computed in float64 at export and rounded once to float32.
    Memory: batch * K * latent_dim floats per call (20 MB for 256 x 500 x 40).
    """

    def __init__(self, means, log_vars, tensors):
        super().__init__(name=names.LOG_PRIOR)
        means, log_vars = _components(means, log_vars)
        lv64 = log_vars.astype(np.float64)
        inv_std = np.exp(-0.5 * lv64).astype(np.float32)  # (K, d)
        num_components, latent_dim = means.shape
        offset = -0.5 * (lv64.sum(-1) + latent_dim * math.log(2 * math.pi)) - math.log(num_components)
        offset = offset.astype(np.float32)  # (K,)
        (z,) = (_spec(t) for t in tensors["inputs"])
        (out,) = names.names(tensors, "outputs")

        def serve(z):
            scaled = (z[:, None, :] - tf.constant(means)[None]) * tf.constant(inv_std)[None]
            log_components = tf.constant(offset)[None] - 0.5 * tf.reduce_sum(tf.square(scaled), axis=-1)  # (batch, K)
            top = tf.reduce_max(log_components, axis=-1, keepdims=True)  # a stable log-sum-exp
            log_sum = tf.math.log(tf.reduce_sum(tf.exp(log_components - top), axis=-1))
            return {out: top[:, 0] + log_sum}

        self.serve = tf.function(serve, input_signature=[z])


def _components(means, log_vars):
    """The mixture's (means, log_vars) as float32 NumPy (K, latent_dim) arrays, checked."""
    means, log_vars = (np.asarray(a, np.float32) for a in (means, log_vars))
    finite = np.isfinite(means).all() and np.isfinite(log_vars).all()
    if means.ndim != 2 or means.shape != log_vars.shape or not finite:
        raise ExportError(
            f"The prior's components must be finite (K, latent_dim) means and log-variances. "
            f"Received: means {means.shape}, log_vars {log_vars.shape}"
        )
    return means, log_vars


def _spec(tensor):
    """A TensorSpec for one entry of the tensor table: float32, batch dimension None."""
    return tf.TensorSpec([None, *tensor["shape"][1:]], tf.float32, name=tensor["name"])


def _label_spec(num_classes):
    """[] for an unconditional model; else the one-hot label input y, float32 (batch, C)."""
    return [] if num_classes is None else [tf.TensorSpec([None, num_classes], tf.float32, name=names.LABELS)]


def save(module, path):
    """Writes a TF Serving version folder (saved_model.pb + variables/) with `serving_default`."""
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def run(path, inputs):
    """Reloads the SavedModel at `path` and runs `serving_default` on a dict of NumPy inputs.

    Returns a dict of NumPy outputs. The loaded object stays referenced while
    the signature runs: the signature alone does not keep its variables alive.
    """
    loaded = tf.saved_model.load(path)
    outputs = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}
