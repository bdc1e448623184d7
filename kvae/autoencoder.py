"""The deterministic autoencoder that the VAE story starts from."""

import keras
import numpy as np
from keras import ops

from kvae import losses, submodels


@keras.saving.register_keras_serializable(package="kvae")
class Autoencoder(keras.Model):
    """Code h = g(Wx + b), reconstruction x_hat = f(W* h + c), squared-error objective.

    Args:
        encoder: Keras model, x (batch, *input_shape) -> h (batch, code_dim).
        decoder: Keras model, h -> x_hat (batch, *input_shape) in [0, 1]
            (build it with output_activation="sigmoid").

    It learns codes but no distribution over them: decoding random codes is
    not generation, which is what the VAE adds.
    """

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.code_dim = int(decoder.inputs[0].shape[-1])

    def call(self, x, training=False):
        x_hat = self.decoder(self.encoder(x, training=training), training=training)
        self.add_loss(ops.mean(losses.squared_error(x, x_hat)))  # the target is x itself
        return x_hat

    def encode(self, x, batch_size=512):
        return np.concatenate(submodels.batched(lambda x, _: self.encoder(x), x, batch_size=batch_size))

    def decode(self, h, batch_size=512):
        return np.concatenate(submodels.batched(lambda h, _: self.decoder(h), h, batch_size=batch_size))

    def reconstruct(self, x):
        return self.decode(self.encode(x))

    def get_config(self):
        return submodels.get_config(self, super().get_config())

    @classmethod
    def from_config(cls, config):
        return submodels.from_config(cls, config)
