"""Encoder and decoder as tf.Modules with one named serving signature each.

A tf.function with a named TensorSpec input and a dict output gives the
SavedModel signature `serving_default` the tensor names of ARTIFACTS.md
(x -> z_mean, z_log_var; z -> x_mean[, x_logits]). The same tf.functions are
what tf2onnx converts, so both formats come from one traced graph.
"""

import tensorflow as tf


class EncoderModule(tf.Module):
    """x (batch, *input_shape) float32 in [0, 1] -> {"z_mean", "z_log_var"}, each (batch, latent_dim)."""

    def __init__(self, encoder, input_shape):
        super().__init__(name="encoder")
        self.encoder = encoder  # tracked, so its variables are saved
        spec = tf.TensorSpec([None, *input_shape], tf.float32, name="x")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, x):
        z_mean, z_log_var = self.encoder(x, training=False)
        return {"z_mean": z_mean, "z_log_var": z_log_var}


class DecoderModule(tf.Module):
    """z (batch, latent_dim) float32 -> {"x_mean"[, "x_logits"]}, each (batch, *input_shape).

    For a Bernoulli decoder the Keras output is logits and x_mean = sigmoid(logits),
    as in VAE.output_mean; for a Gaussian one the output is already the mean.
    """

    def __init__(self, decoder, latent_dim, likelihood):
        super().__init__(name="decoder")
        self.decoder = decoder
        self.likelihood = likelihood
        spec = tf.TensorSpec([None, latent_dim], tf.float32, name="z")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, z):
        out = self.decoder(z, training=False)
        if self.likelihood == "bernoulli":
            return {"x_mean": tf.sigmoid(out), "x_logits": out}
        return {"x_mean": out}


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
