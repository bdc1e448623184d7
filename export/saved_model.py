"""Encoder and decoder as tf.Modules with one named serving signature each.

A tf.function with a named TensorSpec input and a dict output gives the
SavedModel signature `serving_default` the tensor names of ARTIFACTS.md
(x -> z_mean, z_log_var; z -> x_mean[, x_logits]; conditional models take y,
one-hot [batch, C], as a second input of both). The same tf.functions are
what tf2onnx converts, so both formats come from one traced graph. Outputs
are cast to float32, the contract's only datatype.
"""

import tensorflow as tf


class EncoderModule(tf.Module):
    """x (batch, *input_shape) float32 in [0, 1] [, y (batch, C) one-hot] -> {"z_mean", "z_log_var"}, each (batch, latent_dim)."""

    def __init__(self, encoder, input_shape, num_classes=None):
        super().__init__(name="encoder")
        self.encoder = encoder  # tracked, so its variables are saved
        specs = [tf.TensorSpec([None, *input_shape], tf.float32, name="x")] + _label_spec(num_classes)
        self.serve = tf.function(self._serve if num_classes is None else self._serve_conditional, input_signature=specs)

    def _serve(self, x):
        return self._outputs(self.encoder(x, training=False))

    def _serve_conditional(self, x, y):
        return self._outputs(self.encoder([x, y], training=False))

    @staticmethod
    def _outputs(encoded):
        z_mean, z_log_var = encoded
        return {"z_mean": tf.cast(z_mean, tf.float32), "z_log_var": tf.cast(z_log_var, tf.float32)}


class DecoderModule(tf.Module):
    """z (batch, latent_dim) float32 -> {"x_mean"[, "x_logits"]}, each (batch, *input_shape).

    For a Bernoulli decoder the Keras output is logits and x_mean = sigmoid(logits),
    as in VAE.output_mean; for a Gaussian one the output is already the mean.
    """

    def __init__(self, decoder, latent_dim, likelihood, num_classes=None):
        super().__init__(name="decoder")
        self.decoder = decoder
        self.likelihood = likelihood
        specs = [tf.TensorSpec([None, latent_dim], tf.float32, name="z")] + _label_spec(num_classes)
        self.serve = tf.function(self._serve if num_classes is None else self._serve_conditional, input_signature=specs)

    def _serve(self, z):
        return self._outputs(self.decoder(z, training=False))

    def _serve_conditional(self, z, y):
        return self._outputs(self.decoder([z, y], training=False))

    def _outputs(self, out):
        out = tf.cast(out, tf.float32)
        if self.likelihood == "bernoulli":
            return {"x_mean": tf.sigmoid(out), "x_logits": out}
        return {"x_mean": out}


def _label_spec(num_classes):
    """[] for an unconditional model; else the one-hot label input y, float32 (batch, C)."""
    return [] if num_classes is None else [tf.TensorSpec([None, num_classes], tf.float32, name="y")]


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
