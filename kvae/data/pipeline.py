"""tf.data pipelines that turn uint8 images into model inputs.

Bernoulli models see binary pixels: training images are re-binarized every
epoch (x ~ Bernoulli(pixel / 255)), evaluation images once with a fixed seed,
so every run and every paper-style evaluation sees the same test set.
"""

import numpy as np
import tensorflow as tf

TEST_BINARIZATION_SEED = 0  # the protocol's fixed seed for validation/test sets


def binarize_once(x_uint8, seed=TEST_BINARIZATION_SEED):
    """Binarizes images once, reproducibly: float32 in {0, 1}, same shape."""
    rng = np.random.default_rng(seed)
    p = x_uint8.astype(np.float32) / 255.0
    return (rng.random(p.shape, dtype=np.float32) < p).astype(np.float32)


def train_dataset(x_uint8, batch_size, binarize, seed, shuffle=True):
    """Shuffled batches of float32 images in [0, 1] (binarized anew each epoch if asked).

    Shapes: x_uint8 (n, h, w, c) -> batches (batch_size, h, w, c); the last
    partial batch is kept.
    """
    images = tf.data.Dataset.from_tensor_slices(x_uint8)
    if shuffle:
        images = images.shuffle(len(x_uint8), seed=seed, reshuffle_each_iteration=True)
    images = images.batch(batch_size)
    if binarize:
        # One stateless seed pair per batch, from a stream that is itself
        # re-drawn each epoch: new pixels every epoch, same pixels every run.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(images, seeds).map(_binarize_batch, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = images.map(_to_unit_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x, batch_size):
    """Batches of an already-prepared float32 array, in order."""
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def prepare_eval(x_uint8, binarize):
    """The fixed evaluation view of a split: binarized once, or scaled to [0, 1]."""
    return binarize_once(x_uint8) if binarize else x_uint8.astype(np.float32) / 255.0


def _to_unit_float(x):
    return tf.cast(x, tf.float32) / 255.0


def _binarize_batch(x, seed):
    p = _to_unit_float(x)
    u = tf.random.stateless_uniform(tf.shape(p), seed=tf.cast(seed, tf.int32) % (2**31 - 1))
    return tf.cast(u < p, tf.float32)
