"""Labels for the conditional VAE: the input convention and the conversions.

A conditional VAE (`VAE(..., num_classes=C)`) takes its inputs as a dict
{"x": images (batch, *input_shape), "y": labels}, so a plain `fit` feeds both
to `call` without a custom train_step. Labels may be integer class ids
(batch,) or one-hot rows (batch, C); the encoder and decoder models always
receive them as float32 one-hot (batch, C), which is also what the exported
models take (ARTIFACTS.md).
"""

import numpy as np
from keras import ops

from kvae_contract import artifacts
from kvae_contract.errors import ConfigError


def one_hot(labels, num_classes):
    """Symbolic or eager labels -> float32 one-hot (batch, num_classes), with keras.ops.

    Integer ids (batch,) or (batch, 1) are one-hot encoded; (batch, num_classes)
    rows are taken as they are (one-hot, or soft labels), cast to float32.
    """
    shape = tuple(labels.shape)
    if len(shape) == 2 and shape[-1] == num_classes:
        return ops.cast(labels, "float32")
    if len(shape) == 2 and shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    elif len(shape) != 1:
        raise ConfigError(
            f"Labels must be class ids of shape (batch,) or one-hot rows of shape (batch, {num_classes}). "
            f"Received: labels with shape {shape}"
        )
    return ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")


def one_hot_numpy(labels, num_classes, n=None):
    """NumPy labels -> float32 one-hot (n, num_classes), checking values.

    `labels` is an int (every row that class; needs `n`), a sequence of n
    class ids, or (n, num_classes) one-hot rows. With `n` the count must match.
    """
    a = np.asarray(labels)
    if a.ndim == 0:
        if n is None:
            raise ConfigError(f"A single label needs the number of rows. Received: labels={labels!r}")
        a = np.full((n,), a)
    if a.ndim == 2 and a.shape[1] == num_classes:
        rows = a.astype(np.float32)
    elif a.ndim == 1 and a.dtype.kind in "iu" or (a.dtype.kind == "f" and a.ndim == 1 and np.all(a == np.round(a))):
        ids = a.astype(np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= num_classes):
            raise ConfigError(
                f"Class ids must be in [0, {num_classes}). Received: labels from {ids.min()} to {ids.max()}"
            )
        rows = artifacts.one_hot(ids, num_classes)
    else:
        raise ConfigError(
            f"Labels must be an int, n class ids in [0, {num_classes}), or (n, {num_classes}) one-hot rows. "
            f"Received: labels with shape {a.shape} and dtype {a.dtype}"
        )
    if n is not None and len(rows) != n:
        raise ConfigError(f"Expected one label per row ({n}). Received: {len(rows)} labels")
    return rows


def cycling_labels(n, num_classes):
    """The default labels of conditional sampling: 0, 1, ..., C-1, 0, 1, ... (n,), the contract's convention."""
    return artifacts.default_labels(n, num_classes)


def inputs(x, y):
    """A conditional VAE's inputs from images and labels (arrays or tensors): {"x": x, "y": y}."""
    return {"x": x, "y": y}


def with_labels(dataset):
    """A tf.data.Dataset of (x, y) pairs -> one of {"x": x, "y": y} dicts, ready for a conditional `fit`.

    Works on batched or unbatched datasets (e.g. from image_dataset_from_directory).
    """
    return dataset.map(inputs)
