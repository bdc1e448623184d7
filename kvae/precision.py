"""Mixed precision: build models under a dtype policy, and make float32 twins for export.

Under "mixed_bfloat16" or "mixed_float16" the layers compute in 16 bits and
keep float32 variables. The VAE computes its loss terms in float32 (see
kvae/vae.py); the exported graphs are float32 twins with the same weights,
because serving runtimes (onnxruntime on CPU, TF Serving clients) expect float32.
"""

import contextlib

import keras

from kvae.config import DTYPE_POLICIES as POLICIES
from kvae_contract.errors import ConfigError


@contextlib.contextmanager
def policy_scope(name):
    """Sets Keras' global dtype policy to `name` inside the block (None: leave it alone)."""
    if name is None:
        yield
        return
    if name not in POLICIES:
        raise ConfigError(f"`dtype_policy` must be one of {POLICIES}. Received: dtype_policy={name!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def is_float32(model):
    """True if `model` and every layer in it (recursively, through nested models) compute in float32."""
    # Model.layers lists direct sublayers: a VAE's encoder, decoder and sampling layer, a functional model's layers.
    return model.compute_dtype == "float32" and all(is_float32(layer) for layer in getattr(model, "layers", []))


def float32_twin(model):
    """`model` rebuilt with every layer in float32 and the same weights; `model` itself if already float32.

    The serialized config is rewritten (every dtype policy -> "float32") and
    deserialized under a float32 global policy, so layers whose config names
    no policy get float32 too. Mixed policies keep float32 variables, so the
    weights copy over exactly.
    """
    if is_float32(model):
        return model
    config = _float32_config(keras.saving.serialize_keras_object(model))
    with policy_scope("float32"):
        twin = keras.saving.deserialize_keras_object(config)
    twin.set_weights(model.get_weights())
    return twin


def _float32_config(value):
    """A copy of a serialized config with every DTypePolicy replaced by float32."""
    if isinstance(value, dict):
        if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(value.get("config"), dict):
            return {**value, "config": {**value["config"], "name": "float32"}}
        return {k: _float32_config(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_float32_config(v) for v in value]
    return value
