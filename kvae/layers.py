"""The reparameterization layer."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kvae")
class Sampling(keras.layers.Layer):
    """Draws z = mu + exp(log_var / 2) * eps with eps ~ N(0, I).

    Writing the sample as a deterministic function of (mu, log_var) and
    independent noise lets gradients flow into the encoder (Kingma & Welling,
    2014). The noise comes from this layer's own `SeedGenerator`, so a seeded
    model draws the same sequence of samples in every run.

    Args:
        seed: int or None, seed of the noise stream.

    Call arguments:
        inputs: `(z_mean, z_log_var)`, each of shape (batch, latent_dim).
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
