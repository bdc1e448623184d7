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


def train_dataset(x_uint8, batch_size, binarize, seed, shuffle=True):
    """Shuffled batches of float32 images in [0, 1] (binarized anew each epoch if asked).

    Shapes: x_uint8 (n, h, w, c) -> batches (batch_size, h, w, c); the last
    partial batch is kept. x_uint8 may also be a `labeled` dataset.
    """
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
