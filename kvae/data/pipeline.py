"""tf.data pipelines that turn uint8 images into model inputs.

Bernoulli models see binary pixels: training images are re-binarized every
epoch (x ~ Bernoulli(pixel / 255)), evaluation images once with a fixed seed,
so every run and every paper-style evaluation sees the same test set.

Images come as a NumPy array, or as a tf.data.Dataset of examples of known
length (see `labeled`): {"x": image, "y": label} dicts for a conditional
model, whose "x" is transformed and whose "y" passes through unchanged.
"""

import numpy as np
import tensorflow as tf

from kvae.data.protocol import TEST_BINARIZATION_SEED, binarize_once, evaluation_views, prepare_eval  # noqa: F401 (re-exported)


def labeled(x, y):
    """Images with their labels as a tf.data.Dataset of {"x": image, "y": label}: a conditional model's examples.

    len() of the result is the number of images, like len() of an array, so
    it can stand wherever the functions here take an image array.
    """
    return tf.data.Dataset.from_tensor_slices({"x": x, "y": np.asarray(y, np.int64)})


def batches_per_epoch(n, batch_size):
    """Batches in one epoch of n examples; the last partial batch is kept."""
    return -(-n // batch_size)


def train_dataset(x_uint8, batch_size, binarize, seed, shuffle=True, epochs=None, first_epoch=0):
    """Shuffled batches of float32 images in [0, 1] (binarized anew each epoch if asked).

    Shapes: x_uint8 (n, h, w, c) -> batches (batch_size, h, w, c); the last
    partial batch is kept. x_uint8 may also be a `labeled` dataset.

    epochs=None: one epoch's batches; iterating again gives the next epoch's
    (seeded, counted from the first iteration in this process).
    epochs=E: the batches of epochs first_epoch..E-1 in one pass, each
    epoch's order and binary pixels a function of (seed, epoch) alone, so a
    run resumed at epoch e draws exactly the batches it would have drawn; fit
    it with steps_per_epoch=batches_per_epoch(n, batch_size). `kvae train` uses this.
    """
    if epochs is not None:
        return _epoch_indexed(x_uint8, batch_size, binarize, seed, shuffle, first_epoch, epochs)
    images = _examples(x_uint8)
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


def _epoch_indexed(x_uint8, batch_size, binarize, seed, shuffle, first_epoch, epochs):
    """Epochs first_epoch..epochs-1: a stateless permutation of the example indices from (seed, epoch), gathered."""
    n = len(x_uint8)
    data = _as_tensors(x_uint8)  # the whole split: an array, or the dict of a `labeled` dataset

    def one_epoch(epoch):  # epoch: tf.int64 scalar
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()  # (index in epoch, ids)
        gather = lambda ids: tf.nest.map_structure(lambda t: tf.gather(t, ids), data)
        if binarize:
            return batches.map(
                lambda i, ids: _binarize_batch(gather(ids), tf.stack([tf.constant(seed, tf.int64), epoch * 1_000_003 + i])),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        return batches.map(lambda i, ids: _to_unit_float(gather(ids)), num_parallel_calls=tf.data.AUTOTUNE)

    return tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def _as_tensors(x):
    """An image array -> a tensor; a dataset of examples of known length -> its examples stacked (a dict of tensors)."""
    if isinstance(x, tf.data.Dataset):
        return next(iter(x.batch(len(x))))
    return tf.constant(x)


def eval_dataset(x, batch_size):
    """Batches of an already-prepared float32 array, in order."""
    return _examples(x).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _examples(x):
    """An image array, or already a dataset of examples -> a tf.data.Dataset of examples."""
    return x if isinstance(x, tf.data.Dataset) else tf.data.Dataset.from_tensor_slices(x)


def _on_images(transform):
    """`transform(images, *args)` applied to an element's images: the element itself, or its "x"."""

    def apply(element, *args):
        if isinstance(element, dict):
            return {**element, "x": transform(element["x"], *args)}
        return transform(element, *args)

    return apply


@_on_images
def _to_unit_float(x):
    return tf.cast(x, tf.float32) / 255.0


@_on_images
def _binarize_batch(x, seed):
    p = _to_unit_float(x)
    u = tf.random.stateless_uniform(tf.shape(p), seed=tf.cast(seed, tf.int32) % (2**31 - 1))
    return tf.cast(u < p, tf.float32)
