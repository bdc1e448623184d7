"""What the VAE and the Autoencoder share as models built around an encoder and a decoder.

Both call their sub-models eagerly on NumPy inputs in batches, and both save
and load the two sub-models in their config the same way.
"""

import keras
import numpy as np
from keras import ops


def batched(function, x, y=None, batch_size=512):
    """Calls `function(x, y)` eagerly on consecutive slices of x and y (y may be None); a list of NumPy outputs.

    One list item per slice: an array, or a list of arrays where `function`
    returns a list or tuple. Eager calls: no tf.function tracing per batch shape.
    """
    x = np.asarray(x, np.float32)
    outs = []
    for i in range(0, len(x), batch_size):
        out = function(x[i : i + batch_size], None if y is None else y[i : i + batch_size])
        outs.append([ops.convert_to_numpy(o) for o in out] if isinstance(out, (list, tuple)) else ops.convert_to_numpy(out))
    return outs


def get_config(model, config):
    """`config` (the Keras base config) with the model's encoder and decoder serialized."""
    return {
        **config,
        "encoder": keras.saving.serialize_keras_object(model.encoder),
        "decoder": keras.saving.serialize_keras_object(model.decoder),
    }


def from_config(cls, config):
    """`cls(encoder, decoder, **rest)` from a config written by get_config."""
    config = dict(config)
    encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
    decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
    return cls(encoder, decoder, **config)
