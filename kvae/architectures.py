"""The built-in encoder and decoder architectures, as functional Keras models.

An encoder maps x (batch, *input_shape) to (z_mean, z_log_var), each
(batch, latent_dim) — or, for the plain autoencoder, to one code h. A decoder
maps z (batch, latent_dim) to (batch, *input_shape): logits for a Bernoulli
likelihood (output_activation=None), means in [0, 1] otherwise ("sigmoid").

Conditional variants (num_classes=C) take a second input y, float32 one-hot
(batch, C), named "y": the encoder maps [x, y] and the decoder [z, y]. The
label is concatenated to the flattened features of x in the encoder and to z
in the decoder, the usual CVAE wiring (Sohn et al., 2015).
"""

import math

import keras
from keras import layers

from kvae.config import ARCHITECTURES, MLP_LAYERS
from kvae.layers import Bound, GatedDense
from kvae_contract.errors import ConfigError


def mlp_encoder(input_shape, latent_dim, hidden=(200, 200), activation="tanh", variational=True, num_classes=None,
                layer="dense", log_var_bounds=None):
    """784-200-200-L with tanh: the MLP of the IWAE paper (Burda et al., 2015).

    layer="gated": gated dense layers without activation, the VampPrior
    paper's MLP (Tomczak & Welling, 2018). log_var_bounds=(low, high) clips
    z_log_var, as that paper does with (-6, 2).
    """
    x = keras.Input(shape=input_shape, name="x")
    h = layers.Flatten()(x)
    inputs, h = _with_label(x, h, num_classes)
    h = _hidden_stack(h, hidden, activation, layer)
    return _encoder_heads(inputs, h, latent_dim, variational, activation, log_var_bounds)


def mlp_decoder(latent_dim, output_shape, hidden=(200, 200), activation="tanh", output_activation=None,
                num_classes=None, layer="dense"):
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs, h = _with_label(z, z, num_classes)
    h = _hidden_stack(h, hidden, activation, layer)
    h = layers.Dense(math.prod(output_shape), activation=output_activation, name="output")(h)
    out = layers.Reshape(output_shape, name="x_out")(h)
    return keras.Model(inputs, out, name="decoder")


def conv_encoder(input_shape, latent_dim, filters=(32, 64), dense_units=16, variational=True, num_classes=None,
                 log_var_bounds=None):
    """Two stride-2 3x3 convolutions (32 then 64 filters), then a small dense layer."""
    _check_divisible(input_shape, 2 ** len(filters))
    x = keras.Input(shape=input_shape, name="x")
    h = x
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"conv_{i}")(h)
    h = layers.Flatten()(h)
    inputs, h = _with_label(x, h, num_classes)
    h = layers.Dense(dense_units, activation="relu", name="dense")(h)
    return _encoder_heads(inputs, h, latent_dim, variational, "tanh", log_var_bounds)


def conv_decoder(latent_dim, output_shape, filters=(32, 64), output_activation=None, num_classes=None):
    """The encoder mirrored: dense to a (h/4, w/4, 64) map, then stride-2 transposed convolutions."""
    _check_divisible(output_shape, 2 ** len(filters))
    height, width, channels = output_shape
    scale = 2 ** len(filters)
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs, h = _with_label(z, z, num_classes)
    h = layers.Dense((height // scale) * (width // scale) * filters[-1], activation="relu", name="dense")(h)
    h = layers.Reshape((height // scale, width // scale, filters[-1]))(h)
    for i, f in enumerate(reversed(filters)):
        h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu", name=f"deconv_{i}")(h)
    out = layers.Conv2DTranspose(channels, 3, padding="same", activation=output_activation, name="x_out")(h)
    return keras.Model(inputs, out, name="decoder")


def build(architecture, input_shape, latent_dim, output_activation=None, variational=True, dense_units=16,
          num_classes=None, hidden=(200, 200), mlp_layer="dense", log_var_bounds=None):
    """Returns (encoder, decoder) of a built-in architecture.

    `dense_units`: the conv encoder's dense layer; `hidden`: the MLP encoder's
    layer sizes, mirrored by the decoder; `mlp_layer`: "dense" (tanh) or
    "gated" (GatedDense) for the MLP's hidden layers; `log_var_bounds`:
    None or (low, high) to clip the encoder's z_log_var.

    With num_classes=C both are conditional on a one-hot label y (batch, C).
    """
    input_shape = tuple(input_shape)
    if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 2):
        raise ConfigError(f"`num_classes` must be None or an int >= 2. Received: num_classes={num_classes!r}")
    if mlp_layer not in MLP_LAYERS:
        raise ConfigError(f"`mlp_layer` must be one of {MLP_LAYERS}. Received: mlp_layer={mlp_layer!r}")
    labels = {"num_classes": num_classes}
    if architecture == "mlp":
        hidden = tuple(hidden)
        enc = mlp_encoder(input_shape, latent_dim, hidden=hidden, variational=variational, layer=mlp_layer,
                          log_var_bounds=log_var_bounds, **labels)
        dec = mlp_decoder(latent_dim, input_shape, hidden=hidden[::-1], output_activation=output_activation,
                          layer=mlp_layer, **labels)
    elif architecture == "conv":
        enc = conv_encoder(input_shape, latent_dim, dense_units=dense_units, variational=variational,
                           log_var_bounds=log_var_bounds, **labels)
        dec = conv_decoder(latent_dim, input_shape, output_activation=output_activation, **labels)
    else:
        raise ConfigError(f"`architecture` must be one of {ARCHITECTURES}. Received: architecture={architecture!r}")
    return enc, dec


def hierarchical_mlp(input_shape, latent_dims, hidden=(300, 300), layer="gated", log_var_bounds=None,
                     output_activation=None, activation="tanh"):
    """The four MLPs of a two-level HVAE (Tomczak & Welling, 2018, their HVAE): a dict of functional models.

    latent_dims = (d1, d2): z1 is the level next to x, z2 the top. With
    hidden = (h_1, ..., h_n):
        encoder_z2: x -> [z2_mean, z2_log_var]; the hidden stack, then the two heads.
        encoder_z1: [x, z2] -> [z1_mean, z1_log_var]; x and z2 each through one
            layer of h_1 units, joined, then one layer of h_n units.
        prior_z1: z2 -> [mean, log_var] of p(z1|z2); the hidden stack, then the heads.
        decoder: [z1, z2] -> x (logits, or means with output_activation); z1 and z2
            each through one layer of h_1 units, joined, then one layer of h_n units.
    log_var_bounds clips every log-variance head (the paper: (-6, 2)).
    """
    if not (len(latent_dims) == 2 and all(isinstance(d, int) and d >= 1 for d in latent_dims)):
        raise ConfigError(f"`latent_dims` must be two positive ints (z1, z2). Received: latent_dims={latent_dims!r}")
    if layer not in MLP_LAYERS:
        raise ConfigError(f"`mlp_layer` must be one of {MLP_LAYERS}. Received: mlp_layer={layer!r}")
    d1, d2 = latent_dims
    hidden = tuple(hidden)
    x = keras.Input(shape=tuple(input_shape), name="x")
    z1 = keras.Input(shape=(d1,), name="z1")
    z2 = keras.Input(shape=(d2,), name="z2")
    flat = layers.Flatten()(x)

    def joined(a, b, prefix):  # two inputs -> h_1 units each -> concatenated -> h_n units
        ha = _hidden_stack(a, hidden[:1], activation, layer, prefix=f"{prefix}_a")
        hb = _hidden_stack(b, hidden[:1], activation, layer, prefix=f"{prefix}_b")
        return _hidden_stack(layers.Concatenate()([ha, hb]), hidden[-1:], activation, layer, prefix=f"{prefix}_joint")

    models = {
        "encoder_z2": _encoder_heads(x, _hidden_stack(flat, hidden, activation, layer), d2, True, activation,
                                     log_var_bounds, name="encoder_z2"),
        "encoder_z1": _encoder_heads([x, z2], joined(flat, z2, "q_z1"), d1, True, activation, log_var_bounds,
                                     name="encoder_z1"),
        "prior_z1": _encoder_heads(z2, _hidden_stack(z2, hidden, activation, layer), d1, True, activation,
                                   log_var_bounds, name="prior_z1"),
    }
    h = layers.Dense(math.prod(input_shape), activation=output_activation, name="output")(joined(z1, z2, "p_x"))
    models["decoder"] = keras.Model([z1, z2], layers.Reshape(tuple(input_shape), name="x_out")(h), name="decoder")
    return models


def _with_label(first_input, features, num_classes):
    """Unconditional: (first_input, features). Conditional: ([first_input, y], features ++ y), y (batch, C)."""
    if num_classes is None:
        return first_input, features
    y = keras.Input(shape=(num_classes,), name="y")
    return [first_input, y], layers.Concatenate(name="with_label")([features, y])


def _hidden_stack(h, hidden, activation, layer, prefix=None):
    """The MLP's hidden layers: Dense with `activation`, or GatedDense (linear half without activation)."""
    for i, units in enumerate(hidden):
        if layer == "gated":
            h = GatedDense(units, name=f"{prefix or 'gated'}_{i}")(h)
        else:
            h = layers.Dense(units, activation=activation, name=f"{prefix or 'dense'}_{i}")(h)
    return h


def _encoder_heads(x, h, latent_dim, variational, code_activation, log_var_bounds=None, name="encoder"):
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ConfigError(f"`latent_dim` must be a positive int. Received: latent_dim={latent_dim!r}")
    if variational:
        z_mean = layers.Dense(latent_dim, name="z_mean")(h)
        if log_var_bounds is None:
            z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
        else:
            z_log_var = layers.Dense(latent_dim, name="z_log_var_unbounded")(h)
            z_log_var = Bound(*log_var_bounds, name="z_log_var")(z_log_var)
        return keras.Model(x, [z_mean, z_log_var], name=name)
    # The autoencoder's deterministic code h = g(Wx + b).
    code = layers.Dense(latent_dim, activation=code_activation, name="code")(h)
    return keras.Model(x, code, name="encoder")


def _check_divisible(shape, k):
    if len(shape) != 3 or shape[0] % k or shape[1] % k:
        raise ConfigError(
            f"The conv architecture needs (height, width, channels) with height and width "
            f"divisible by {k}. Received: input_shape={tuple(shape)}"
        )
