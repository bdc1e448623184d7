"""Image files as data: a folder of PNG/JPEG/BMP/GIF images, labels from its subfolders.

    photos/            load_image_folder("photos") -> Splits, class_names ("cat", "dog")
      cat/001.png        label 0
      dog/002.jpg        label 1

Read with keras.utils.image_dataset_from_directory, so any size and any
colour mode work: images are resized to `image_size` (default: the size of
the first image, so equal-sized images stay untouched) and converted to
`color_mode` (default: "grayscale" if the first image is grey, else "rgb").
A folder without subfolders gives unlabelled images (all labels 0). The
images are shuffled once with a fixed seed and split into train, validation
and test, so a folder always gives the same splits.
"""

import dataclasses
import os

import numpy as np

from kvae.config import COLOR_MODES
from kvae.data.idx import DataError
from kvae.data.sources import from_arrays
from kvae_contract.errors import MissingDataError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what image_dataset_from_directory reads
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # Pillow modes of grey images
SPLIT_SEED = 0


def load_image_folder(path, image_size=None, color_mode=None, validation_fraction=0.1, test_fraction=0.1):
    """Reads every image under `path` into `Splits` of uint8 (n, height, width, channels).

    Args:
        path: the folder; one subfolder per class (labels 0..C-1 in sorted
            subfolder order, names in `Splits.class_names`), or images directly in it.
        image_size: (height, width) to resize to; None keeps the first image's size.
        color_mode: "grayscale" (1 channel), "rgb" (3) or "rgba" (4); None: from the first image.
        validation_fraction, test_fraction: shares of the images held out (each at least one image).
    """
    import keras

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise MissingDataError(f"The image folder does not exist. Received: path={path!r}")
    if color_mode not in (None, *COLOR_MODES):
        raise DataError(f"`color_mode` must be one of {COLOR_MODES}. Received: color_mode={color_mode!r}")
    first = _first_image(path)
    if image_size is None or color_mode is None:
        from PIL import Image  # what keras.utils reads images with; it converts modes, so open the file itself

        with Image.open(first) as picture:
            image_size = image_size or (picture.height, picture.width)
            color_mode = color_mode or ("grayscale" if picture.mode in GREY_MODES else "rgb")
    if len(image_size) != 2 or min(image_size) < 1:
        raise DataError(f"`image_size` must be (height, width), both >= 1. Received: image_size={image_size!r}")
    by_class = any(os.path.isdir(os.path.join(path, name)) for name in os.listdir(path))
    dataset = keras.utils.image_dataset_from_directory(
        path, labels="inferred" if by_class else None, label_mode="int", color_mode=color_mode,
        image_size=tuple(image_size), batch_size=256, shuffle=False, verbose=False,
    )
    x, y = _to_arrays(dataset, by_class)
    n_test, n_val = (max(1, round(len(x) * f)) for f in (test_fraction, validation_fraction))
    if len(x) < n_test + n_val + 1:
        raise DataError(f"{path} holds {len(x)} images; it needs at least {n_test + n_val + 1} to split.")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    x, y = x[order], y[order]
    splits = from_arrays(x[n_test:], x[:n_test], y[n_test:], y[:n_test], validation_size=n_val)
    return dataclasses.replace(splits, class_names=tuple(dataset.class_names) if by_class else None)


def _first_image(path):
    """The first image file under `path`, in sorted order, or DataError."""
    for folder, subfolders, names in os.walk(path):
        subfolders.sort()
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                return os.path.join(folder, name)
    raise DataError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) under {path}.")


def _to_arrays(dataset, by_class):
    """Batches of float32 pixels in [0, 255] (and int labels) -> uint8 images (n, h, w, c), int64 labels (n,)."""
    images, labels = [], []
    for batch in dataset.as_numpy_iterator():
        x, y = batch if by_class else (batch, np.zeros(len(batch), np.int64))
        images.append(np.clip(np.round(x), 0, 255).astype(np.uint8))  # resizing interpolates: round back
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)
