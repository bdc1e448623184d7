"""The reparameterization layer."""

import keras
from keras import ops

from kvae_contract.errors import ConfigError


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
            raise ConfigError(f"`seed` must be an int or None. Received: seed={seed!r}")
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


@keras.saving.register_keras_serializable(package="kvae")
class GatedDense(keras.layers.Layer):
    """A gated dense layer: h = activation(x W_h + b_h) * sigmoid(x W_g + b_g).

    The gate lets each unit switch itself off per example (Dauphin et al.,
    2017); Tomczak & Welling (2018) use it in the VampPrior MLPs. Both linear
    maps share one (input_dim, 2 * units) kernel, so a call is one matmul.

    Args:
        units: positive int, size of the output.
        activation: activation of the linear half; None (the published form) keeps it linear.
        kernel_initializer, bias_initializer: as for `keras.layers.Dense`.

    Input shape: (batch, input_dim). Output shape: (batch, units).
    """

    def __init__(self, units, activation=None, kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ConfigError(f"`units` must be a positive int. Received: units={units!r}")
        self.units = units
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(input_dim, 2 * self.units), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(2 * self.units,), initializer=self.bias_initializer)

    def call(self, inputs):
        both = ops.matmul(inputs, self.kernel) + self.bias  # (batch, 2 * units): [linear | gate]
        return self.activation(both[:, : self.units]) * ops.sigmoid(both[:, self.units :])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="kvae")
class Bound(keras.layers.Layer):
    """Clips its input to [low, high] (PyTorch's Hardtanh(low, high)).

    The published VampPrior encoders bound the log-variance to [-6, 2]: no
    posterior narrower than exp(-3) or wider than e, which keeps the first
    epochs from diverging. Outside the bounds the gradient is zero.

    Args:
        low, high: floats with low < high.
    """

    def __init__(self, low, high, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
            raise ConfigError(f"`low` and `high` must be numbers with low < high. Received: low={low!r}, high={high!r}")
        self.low = float(low)
        self.high = float(high)

    def call(self, inputs):
        return ops.clip(inputs, self.low, self.high)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}
