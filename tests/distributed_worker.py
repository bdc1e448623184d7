"""Run by test_distribute.py in a subprocess: a few SGD steps of a VAE under one strategy.

    python tests/distributed_worker.py {single,mirrored,multi-worker} OUT.npz

The encoder's log-variance is pinned at -30 (sigma ~ 3e-7), so the sampling
noise is negligible and runs under different strategies are comparable
weight for weight; SGD (not Adam, which hides a mis-scaled gradient) makes a
wrong loss scale visible.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
mode, out = sys.argv[1], sys.argv[2]

import tensorflow as tf  # noqa: E402

if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kvae import VAE  # noqa: E402
from kvae.data import load_dataset, pipeline  # noqa: E402
from kvae.distribute import make_strategy  # noqa: E402

STEPS, BATCH, LATENT = 4, 100, 4
x = pipeline.binarize_once(load_dataset().x_train[: STEPS * BATCH])

if mode == "mirrored":
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
elif mode == "multi-worker":
    strategy = make_strategy("multi-worker")
else:
    strategy = make_strategy("default")

keras.utils.set_random_seed(0)
with strategy.scope():
    x_in = keras.Input((28, 28, 1))
    h = keras.layers.Dense(64, activation="tanh")(keras.layers.Flatten()(x_in))
    z_mean = keras.layers.Dense(LATENT)(h)
    pinned = keras.layers.Dense(LATENT, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(-30.0), trainable=False)
    encoder = keras.Model(x_in, [z_mean, pinned(h)])
    z_in = keras.Input((LATENT,))
    decoder = keras.Model(z_in, keras.layers.Reshape((28, 28, 1))(keras.layers.Dense(784)(keras.layers.Dense(64, activation="tanh")(z_in))))
    model = VAE(encoder, decoder, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05))

initial = {f"i{i}": w for i, w in enumerate(model.get_weights())}
trainable = np.array([v.trainable for v in model.weights])  # get_weights() lists model.weights
ds = tf.data.Dataset.from_tensor_slices(x).batch(BATCH)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
history = model.fit(ds.with_options(options), epochs=1, verbose=0).history
weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
np.savez(out, loss=history["loss"][0], reconstruction_loss=history["reconstruction_loss"][0], kl_loss=history["kl_loss"][0],
         trainable=trainable, **weights, **initial)
print("replicas", strategy.num_replicas_in_sync)
