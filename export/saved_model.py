"""The exported models as tf.Modules with one named serving signature each.

A tf.function with a named TensorSpec input and a dict output gives the
SavedModel signature `serving_default` the tensor names of ARTIFACTS.md
(x -> z_mean, z_log_var; z -> x_mean[, x_logits]; conditional models take y,
one-hot [batch, C], as a second input of both; VampPrior models add
eps, component -> z and z -> log_pz). A two-level HVAE has its own four
(the Hierarchical* modules: x, eps -> z, log_qz; z -> x_mean[, x_logits];
eps[, component] -> z; z -> log_pz), on the flat code z = [z1 | z2]. The same
tf.functions are what tf2onnx converts, so both formats come from one traced
graph. Outputs are cast to float32, the contract's only datatype.
"""

import math

import numpy as np
import tensorflow as tf

from kvae_contract import artifacts as names

from .errors import ExportError

_LOG_2PI = math.log(2 * math.pi)


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
            return {out: _mixture_draw(means, log_vars, eps, component)}

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
        log_mixture = _log_mixture(*_components(means, log_vars))
        (z,) = (_spec(t) for t in tensors["inputs"])
        (out,) = names.names(tensors, "outputs")

        def serve(z):
            return {out: log_mixture(z)}

        self.serve = tf.function(serve, input_signature=[z])


def _mixture_draw(means, log_vars, eps, component):
    """component @ means + exp(0.5 * (component @ log_vars)) * eps: (batch, d) from one-hot (batch, K) rows."""
    mean = tf.matmul(component, tf.constant(means))  # (batch, latent_dim)
    log_var = tf.matmul(component, tf.constant(log_vars))
    return mean + tf.exp(0.5 * log_var) * eps


def _log_mixture(means, log_vars):
    """The function z (batch, d) -> log (1/K) sum_k N(z | mu_k, diag exp(log_var_k)), (batch,); see LogPriorModule.

    Its float64 parts (1/sigma_k, offset_k) are computed here, once, and rounded to float32 constants.
    """
    lv64 = log_vars.astype(np.float64)
    inv_std = np.exp(-0.5 * lv64).astype(np.float32)  # (K, d)
    num_components, latent_dim = means.shape
    offset = -0.5 * (lv64.sum(-1) + latent_dim * math.log(2 * math.pi)) - math.log(num_components)
    offset = offset.astype(np.float32)  # (K,)

    def log_mixture(z):
        scaled = (z[:, None, :] - tf.constant(means)[None]) * tf.constant(inv_std)[None]
        log_components = tf.constant(offset)[None] - 0.5 * tf.reduce_sum(tf.square(scaled), axis=-1)  # (batch, K)
        top = tf.reduce_max(log_components, axis=-1, keepdims=True)  # a stable log-sum-exp
        log_sum = tf.math.log(tf.reduce_sum(tf.exp(log_components - top), axis=-1))
        return top[:, 0] + log_sum

    return log_mixture


# The two-level HVAE (kvae.hvae.HVAE): four models on the flat code z = [z1 | z2], z1 = z[:, :d1], z2 = z[:, d1:].
# Each noise input eps has the same layout: eps[:, :d1] makes z1 and eps[:, d1:] makes z2.


class HierarchicalEncoderModule(tf.Module):
    """An HVAE's posterior q(z2|x) q(z1|x, z2) as a reparameterized draw, with its log-density.

    x (batch, *input_shape), eps (batch, d1 + d2) N(0, I) noise ->
    {"z": [z1 | z2] (batch, d1 + d2), "log_qz": (batch,)}:

        z2 = z2_mean(x) + exp(0.5 * z2_log_var(x)) * eps[:, d1:]
        z1 = z1_mean(x, z2) + exp(0.5 * z1_log_var(x, z2)) * eps[:, :d1]
        log_qz = log q(z2|x) + log q(z1|x, z2) = -0.5 * sum over both levels of (eps^2 + log_var + log 2 pi)

    log_qz comes from the noise itself, exactly (no (z - mean) / sigma to
    round), as kvae.evaluate computes it. eps = 0 gives the deterministic
    code, HVAE.encode's z_mean. The randomness stays outside, seeded.
    """

    def __init__(self, encoder_z2, encoder_z1, latent_dims, tensors):
        super().__init__(name=names.ENCODER)
        self.encoder_z2, self.encoder_z1 = encoder_z2, encoder_z1  # tracked, so their variables are saved
        d1 = int(latent_dims[0])
        x, eps = (_spec(t) for t in tensors["inputs"])
        z_out, log_qz_out = names.names(tensors, "outputs")

        def serve(x, eps):
            eps1, eps2 = eps[:, :d1], eps[:, d1:]
            z2_mean, z2_log_var = _float32(self.encoder_z2(x, training=False))  # (batch, d2) each
            z2 = z2_mean + tf.exp(0.5 * z2_log_var) * eps2
            z1_mean, z1_log_var = _float32(self.encoder_z1([x, z2], training=False))  # (batch, d1) each
            z1 = z1_mean + tf.exp(0.5 * z1_log_var) * eps1
            log_qz = _log_normal_from_noise(eps1, z1_log_var) + _log_normal_from_noise(eps2, z2_log_var)
            return {z_out: tf.concat([z1, z2], axis=-1), log_qz_out: log_qz}

        self.serve = tf.function(serve, input_signature=[x, eps])


class HierarchicalDecoderModule(DecoderModule):
    """An HVAE's p(x|z1, z2): the flat z (batch, d1 + d2), split into [z1, z2] for the Keras decoder.

    -> {"x_mean"[, "x_logits"]}, each (batch, *input_shape), as DecoderModule.
    """

    def __init__(self, decoder, latent_dims, likelihood):
        super().__init__(decoder, sum(latent_dims), likelihood)
        self.d1 = int(latent_dims[0])  # read when `serve` is traced, at save and conversion

    def _serve(self, z):
        return self._outputs(self.decoder([z[:, : self.d1], z[:, self.d1 :]], training=False))


class HierarchicalPriorModule(tf.Module):
    """An HVAE's generation of codes p(z2) p(z1|z2), noise in, z out: HVAE.generate_codes as a graph.

    eps (batch, d1 + d2): N(0, I) noise already multiplied by the temperature;
    with a VampPrior over z2 also component (batch, K), one-hot ->
    {"z": [z1 | z2] (batch, d1 + d2)}:

        z2 = eps[:, d1:]  (N(0, I)),  or component @ means + exp(0.5 * component @ log_vars) * eps[:, d1:]  (VampPrior)
        z1 = mean(z2) + exp(0.5 * log_var(z2)) * eps[:, :d1],  (mean, log_var) = prior_z1(z2), p(z1|z2)

    A VampPrior's K components (of z2) are baked in as constants, as in PriorModule.
    """

    def __init__(self, prior_z1, latent_dims, tensors, means=None, log_vars=None):
        super().__init__(name=names.PRIOR)
        self.prior_z1 = prior_z1
        d1 = int(latent_dims[0])
        specs = [_spec(t) for t in tensors["inputs"]]  # eps[, component]
        (out,) = names.names(tensors, "outputs")

        def codes(eps, z2):
            mean, log_var = _float32(self.prior_z1(z2, training=False))  # p(z1|z2), (batch, d1) each
            return {out: tf.concat([mean + tf.exp(0.5 * log_var) * eps[:, :d1], z2], axis=-1)}

        def serve_normal(eps):
            return codes(eps, eps[:, d1:])  # z2 ~ N(0, I): the noise itself

        def serve_vamp(eps, component):
            return codes(eps, _mixture_draw(means, log_vars, eps[:, d1:], component))

        if means is not None:
            means, log_vars = _components(means, log_vars)
        self.serve = tf.function(serve_normal if means is None else serve_vamp, input_signature=specs)


class HierarchicalLogPriorModule(tf.Module):
    """An HVAE's log p(z1, z2) = log p(z1|z2) + log p(z2), z (batch, d1 + d2) -> {"log_pz": (batch,)}, nats.

    log p(z1|z2) = log N(z1 | mean(z2), diag exp(log_var(z2))) through prior_z1;
    log p(z2) is the N(0, I) closed form, or the VampPrior's mixture with its
    components baked in (LogPriorModule's computation, same memory: batch * K * d2 floats).
    Full densities, with their -d/2 log 2 pi.
    """

    def __init__(self, prior_z1, latent_dims, tensors, means=None, log_vars=None):
        super().__init__(name=names.LOG_PRIOR)
        self.prior_z1 = prior_z1
        d1 = int(latent_dims[0])
        log_p2 = _log_standard_normal if means is None else _log_mixture(*_components(means, log_vars))
        (z,) = (_spec(t) for t in tensors["inputs"])
        (out,) = names.names(tensors, "outputs")

        def serve(z):
            z1, z2 = z[:, :d1], z[:, d1:]
            mean, log_var = _float32(self.prior_z1(z2, training=False))
            log_p1 = -0.5 * tf.reduce_sum(_LOG_2PI + log_var + tf.square(z1 - mean) * tf.exp(-log_var), axis=-1)
            return {out: log_p1 + log_p2(z2)}

        self.serve = tf.function(serve, input_signature=[z])


def _float32(tensors):
    """A sub-model's outputs (mean, log_var) in float32."""
    return tuple(tf.cast(t, tf.float32) for t in tensors)


def _log_standard_normal(z):
    """log N(z | 0, I), (batch,), from z (batch, d)."""
    return -0.5 * tf.reduce_sum(tf.square(z) + _LOG_2PI, axis=-1)


def _log_normal_from_noise(eps, log_var):
    """log N(z | mean, diag exp(log_var)) at z = mean + exp(0.5 * log_var) * eps, from the noise: (batch,)."""
    return -0.5 * tf.reduce_sum(tf.square(eps) + log_var + _LOG_2PI, axis=-1)


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
