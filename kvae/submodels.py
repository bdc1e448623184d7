"""What the models built around sub-models share: the VAE, the HVAE and the Autoencoder.

They call their sub-models eagerly on NumPy inputs in batches, check each
sub-model's signature the same way, and (VAE, Autoencoder) save and load
their encoder and decoder in their config the same way.
"""

import keras
import numpy as np
from keras import ops

from kvae_contract.errors import ConfigError


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


def signature(model, kind):
    """(input shapes, output shapes) of a sub-model, without the batch axis; ConfigError if it has none.

    Any Keras model with known symbolic inputs fits: functional, Sequential,
    or a subclassed model wrapped as keras.Model(inputs, subclassed(inputs)).
    """
    if not isinstance(model, keras.Model) or not model.built or not getattr(model, "inputs", None):
        raise ConfigError(
            f"`{kind}` must be a built Keras model with symbolic inputs: functional or Sequential "
            f"(wrap a subclassed model as keras.Model(inputs, model(inputs))). Received: {kind}={model!r}"
        )
    return [tuple(t.shape[1:]) for t in model.inputs], [tuple(t.shape[1:]) for t in model.outputs]


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
