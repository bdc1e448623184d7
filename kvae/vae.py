"""The variational autoencoder as a subclassed Keras model.

Training is plain `compile(optimizer=...)` + `fit(x)`: `call` adds the
reconstruction term and the (weighted) KL term with `add_loss`, and
`compute_loss` tracks both as metrics. No `train_step`, no GradientTape, only
`keras.ops`, so the model is not tied to one backend.
"""

import keras
import numpy as np
from keras import ops

from kvae import losses
from kvae.config import LIKELIHOODS
from kvae.layers import Sampling



@keras.saving.register_keras_serializable(package="kvae")
class VAE(keras.Model):
    """A VAE with encoder q(z|x) = N(z_mean, exp(z_log_var)) and decoder p(x|z).

    Args:
        encoder: Keras model, x (batch, *input_shape) -> [z_mean, z_log_var],
            each (batch, latent_dim).
        decoder: Keras model, z (batch, latent_dim) -> (batch, *input_shape):
            logits for "bernoulli", means for "gaussian".
        likelihood: "bernoulli" (binary pixels) or "gaussian".
        beta: weight of the KL term (1.0 gives the ELBO).
        free_bits: KL floor in nats per latent dimension; 0 disables it.
        gaussian_variance: "learned", or a fixed pixel variance > 0 (gaussian only).
        seed: int or None, seed of the sampling layer's noise.

    Called on x it returns a dict: "reconstruction" (decoder output),
    "z_mean", "z_log_var", "z", and per example in nats "reconstruction_nll"
    (-log p(x|z)) and "kl".
    """

    def __init__(
        self,
        encoder,
        decoder,
        likelihood="bernoulli",
        beta=1.0,
        free_bits=0.0,
        gaussian_variance="learned",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"`likelihood` must be one of {LIKELIHOODS}. Received: likelihood={likelihood!r}")
        if not beta >= 0:
            raise ValueError(f"`beta` must be >= 0. Received: beta={beta!r}")
        if not free_bits >= 0:
            raise ValueError(f"`free_bits` must be >= 0. Received: free_bits={free_bits!r}")
        if gaussian_variance != "learned" and not (
            isinstance(gaussian_variance, (int, float)) and gaussian_variance > 0
        ):
            raise ValueError(
                f"`gaussian_variance` must be 'learned' or a number > 0. Received: gaussian_variance={gaussian_variance!r}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.beta = float(beta)
        self.free_bits = float(free_bits)
        self.gaussian_variance = gaussian_variance
        self.seed = seed
        self.latent_dim = check_signatures(encoder, decoder)
        self.sampling = Sampling(seed=seed, name="sampling")
        # The KL weight actually applied; a warm-up callback ramps it to `beta`.
        self.kl_weight = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.beta), trainable=False, name="kl_weight"
        )
        learned = likelihood == "gaussian" and gaussian_variance == "learned"
        initial = 0.0 if learned or likelihood != "gaussian" else float(np.log(gaussian_variance))
        self.log_var = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(initial), trainable=learned, name="log_var"
        )
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    def call(self, x, training=False):
        z_mean, z_log_var = self.encoder(x, training=training)
        z = self.sampling([z_mean, z_log_var])
        reconstruction = self.decoder(z, training=training)
        # Both terms of the objective go through add_loss, so Keras aggregates
        # them (and scales them under tf.distribute) like any other layer loss.
        recon = self.reconstruction_nll(x, reconstruction)
        kl = losses.kl_divergence(z_mean, z_log_var)
        if self.free_bits > 0:
            penalty = losses.free_bits_kl(z_mean, z_log_var, self.free_bits)
        else:
            penalty = ops.mean(kl)
        self.add_loss(ops.mean(recon))
        self.add_loss(self.kl_weight * penalty)
        return {
            "reconstruction": reconstruction,
            "z_mean": z_mean,
            "z_log_var": z_log_var,
            "z": z,
            "reconstruction_nll": recon,
            "kl": kl,
        }

    def reconstruction_nll(self, x, reconstruction):
        """-log p(x|z) per example, (batch,), from the decoder output."""
        if self.likelihood == "bernoulli":
            return losses.bernoulli_nll(x, reconstruction)
        return losses.gaussian_nll(x, reconstruction, self.log_var)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Only the metrics are added here (Keras updates metrics in compute_loss
        # on every backend); the loss itself is the sum of the add_loss terms.
        self.reconstruction_tracker.update_state(y_pred["reconstruction_nll"])
        self.kl_tracker.update_state(y_pred["kl"])
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)

    def get_metrics_result(self):
        result = super().get_metrics_result()
        if getattr(self, "vector_logs", False):  # set by kvae.distribute.prepare_model
            return {name: ops.reshape(value, (1,)) for name, value in result.items()}
        return result

    def compile(self, optimizer="adam", loss=None, **kwargs):
        if loss is not None:
            raise ValueError(
                "VAE computes its own loss (reconstruction + beta * KL); call compile(optimizer=...) "
                f"without `loss`. Received: loss={loss!r}"
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips compile on load for models that override compile(); this
        # restores the saved optimizer (and its state) so training can go on.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # Inference helpers on NumPy arrays. Deterministic unless they say otherwise.

    def encode(self, x, batch_size=512):
        """x (n, *input_shape) in [0, 1] -> (z_mean, z_log_var), each (n, latent_dim)."""
        outputs = _batched(self.encoder, x, batch_size)
        return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])

    def decode(self, z, batch_size=512):
        """z (n, latent_dim) -> x_mean (n, *input_shape), the mean of p(x|z)."""
        return np.concatenate([self.output_mean(o) for o in _batched(self.decoder, z, batch_size)])

    def output_mean(self, reconstruction):
        """The mean of p(x|z) from a decoder output (sigmoid of Bernoulli logits)."""
        if self.likelihood == "bernoulli":
            return ops.convert_to_numpy(ops.sigmoid(reconstruction))
        return ops.convert_to_numpy(reconstruction)

    def sample(self, n, seed=None, temperature=1.0):
        """n images decoded from z ~ N(0, temperature^2 I), drawn with NumPy's PCG64(seed).

        The same seed gives the same z as the onnxruntime runtime in serving/.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"`n` must be a positive int. Received: n={n!r}")
        z = temperature * np.random.default_rng(seed).standard_normal((n, self.latent_dim), dtype=np.float32)
        return self.decode(z)

    def reconstruct(self, x):
        """Decodes the posterior mean: x -> x_mean, deterministic."""
        return self.decode(self.encode(x)[0])

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "likelihood": self.likelihood,
            "beta": self.beta,
            "free_bits": self.free_bits,
            "gaussian_variance": self.gaussian_variance,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(encoder, decoder, **config)


def check_signatures(encoder, decoder):
    """Checks encoder x -> [z_mean, z_log_var] and decoder z -> x-shaped output; returns latent_dim."""

    def shapes(model, kind):
        if not isinstance(model, keras.Model) or not model.built or not hasattr(model, "inputs"):
            raise ValueError(f"`{kind}` must be a built Keras model with known inputs (functional, or called once). Received: {kind}={model!r}")
        return [tuple(t.shape[1:]) for t in model.inputs], [tuple(t.shape[1:]) for t in model.outputs]

    enc_in, enc_out = shapes(encoder, "encoder")
    dec_in, dec_out = shapes(decoder, "decoder")
    if len(enc_in) != 1 or len(enc_out) != 2 or enc_out[0] != enc_out[1] or len(enc_out[0]) != 1:
        raise ValueError(
            "The encoder must map one input x to two outputs [z_mean, z_log_var] of shape (batch, latent_dim). "
            f"Received: inputs {enc_in}, outputs {enc_out} (shapes without the batch axis)"
        )
    latent = enc_out[0]
    if dec_in != [latent] or len(dec_out) != 1 or dec_out[0] != enc_in[0]:
        raise ValueError(
            f"The decoder must map z of shape {latent} to one output of the input's shape {enc_in[0]}. "
            f"Received: inputs {dec_in}, outputs {dec_out} (shapes without the batch axis)"
        )
    return int(latent[0])


def _batched(model, x, batch_size):
    """Calls `model` eagerly on slices of x (no tf.function tracing per shape); NumPy out."""
    x = np.asarray(x, np.float32)
    outs = []
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size], training=False)
        outs.append([ops.convert_to_numpy(o) for o in out] if isinstance(out, (list, tuple)) else out)
    return outs
