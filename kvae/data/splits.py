"""The `Splits` every data source returns, built from arrays, described and converted.

Images are uint8 (n, height, width, channels) with channels 1, 3 or 4;
labels int64 (n,). `from_arrays` checks user arrays and holds out the last
training images for validation; `convert` resizes and recolours every split.
"""

import dataclasses
import sys

import numpy as np

from kvae.data.idx import DataError
from kvae_contract.idx import VALIDATION_SIZE


@dataclasses.dataclass(frozen=True)
class Splits:
    """One dataset: train, validation and test images, uint8 (n, height, width, channels), with int64 labels (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple | None = None  # names of the labels 0..C-1, when the source has them
    skipped: tuple = ()  # files left out as unreadable (folders with skip_bad_images), relative to the folder

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def warn(message):
    """Prints a warning about the data on stderr (training goes on)."""
    print(f"Warning: {message}", file=sys.stderr, flush=True)


def check_images(x, name="x"):
    """Validates an image array and returns it as uint8 (n, height, width, channels).

    Accepts uint8 in [0, 255] or floats in [0, 1]; (n, h, w) gains a channel axis.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{name} must have shape (n, height, width) or (n, height, width, channels) "
            f"with n > 0 and 1, 3 or 4 channels, e.g. (n, 28, 28, 1). Received: {name}.shape={x.shape}"
        )
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
            raise DataError(
                f"Float {name} must hold finite pixel values in [0, 1]. "
                f"Received: min={np.nanmin(x):.4g}, max={np.nanmax(x):.4g}. Divide uint8 images by 255."
            )
        return np.round(x * 255.0).astype(np.uint8)
    raise DataError(f"{name} must be uint8 in [0, 255] or float in [0, 1]. Received: {name}.dtype={x.dtype}")


def from_arrays(x_train, x_test, y_train=None, y_test=None, validation_size=VALIDATION_SIZE):
    """Builds `Splits` from user arrays; the last `validation_size` training images validate."""
    x_train, x_test = check_images(x_train, "x_train"), check_images(x_test, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"x_train and x_test must have the same image shape. "
            f"Received: {x_train.shape[1:]} and {x_test.shape[1:]}"
        )
    if not 0 <= validation_size < len(x_train):
        raise DataError(
            f"validation_size must be in [0, {len(x_train)}). Received: validation_size={validation_size}"
        )
    y_train = np.zeros(len(x_train), np.int64) if y_train is None else np.asarray(y_train, np.int64)
    y_test = np.zeros(len(x_test), np.int64) if y_test is None else np.asarray(y_test, np.int64)
    if len(y_train) != len(x_train) or len(y_test) != len(x_test):
        raise DataError("Each label array must have one label per image.")
    n = len(x_train) - validation_size
    return Splits(x_train[:n], y_train[:n], x_train[n:], y_train[n:], x_test, y_test)


def describe_data(splits):
    """What training saw, for the run directory: image size, colour mode, shape, image counts, skipped files."""
    height, width, channels = splits.input_shape
    return {
        "image_size": [height, width],
        "color_mode": {1: "grayscale", 3: "rgb", 4: "rgba"}[channels],
        "input_shape": [height, width, channels],
        "num_images": {"train": len(splits.x_train), "validation": len(splits.x_val), "test": len(splits.x_test)},
        "skipped_files": list(splits.skipped),
    }


def convert(splits, image_size, color_mode):
    """Splits with every image resized to image_size and converted to color_mode (None: as they are)."""
    if image_size is None and color_mode is None:
        return splits
    fields = {}
    for f in ("x_train", "x_val", "x_test"):
        fields[f] = convert_images(getattr(splits, f), image_size, color_mode)
    return dataclasses.replace(splits, **fields)


def convert_images(x_uint8, image_size=None, color_mode=None):
    """uint8 (n, h, w, c) -> uint8 (n, *image_size, channels of color_mode), resized with antialiasing."""
    import tensorflow as tf

    channels = {None: x_uint8.shape[-1], "grayscale": 1, "rgb": 3, "rgba": 4}
    if color_mode not in channels:
        raise DataError(f"`color_mode` must be grayscale, rgb or rgba. Received: color_mode={color_mode!r}")
    out = []
    for start in range(0, len(x_uint8), 4096):  # bounded memory: floats for a few thousand images at a time
        x = tf.cast(x_uint8[start : start + 4096], tf.float32)
        if image_size is not None and tuple(x.shape[1:3]) != tuple(image_size):
            x = tf.image.resize(x, tuple(image_size), antialias=True)
        x = _to_channels(x, channels[color_mode])
        out.append(np.clip(np.round(x.numpy()), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def _to_channels(x, channels):
    """float pixels (n, h, w, c) -> (n, h, w, channels): grey <-> RGB(A), alpha opaque."""
    import tensorflow as tf

    have = x.shape[-1]
    if have == channels:
        return x
    grey = x[..., :1] if have == 1 else tf.image.rgb_to_grayscale(x[..., :3])
    if channels == 1:
        return grey
    rgb = x[..., :3] if have >= 3 else tf.repeat(grey, 3, axis=-1)
    return rgb if channels == 3 else tf.concat([rgb, tf.fill(tf.shape(grey), 255.0)], axis=-1)
