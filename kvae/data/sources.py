"""Where images come from: local IDX files, tensorflow-datasets, or arrays.

Every source returns `Splits` of uint8 images shaped (n, height, width,
channels) and integer labels. Fashion-MNIST is read from local files first so
that nothing needs the network; other names go through tensorflow-datasets.
"""

import dataclasses
import os

import numpy as np

from kvae.data.idx import DataError, read_idx

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
DATA_DIR_ENV = "KVAE_DATA_DIR"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
VALIDATION_SIZE = 10_000  # 50k train / 10k validation, as in the literature
FETCH_HINT = (
    "Get the four Fashion-MNIST IDX files with `apt-get install -y dataset-fashion-mnist` "
    f"(installs them in {DEFAULT_DATA_DIR}), or point --data-dir / {DATA_DIR_ENV} at a folder "
    "that holds them, or remove the folder to let tensorflow-datasets download `fashion_mnist`."
)


@dataclasses.dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


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


def resolve_data_dir(data_dir=None):
    """--data-dir, then $KVAE_DATA_DIR, then Debian's location."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


def read_fashion_mnist_dir(data_dir):
    """Reads the four IDX files from `data_dir`, checking that they fit together."""
    paths = {k: os.path.join(data_dir, v) for k, v in IDX_FILES.items()}
    arrays = {k: read_idx(p, FETCH_HINT) for k, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{paths[split + '_images']} and {paths[split + '_labels']} do not match: "
                f"images {images.shape}, labels {labels.shape}. {FETCH_HINT}"
            )
    return from_arrays(arrays["train_images"], arrays["test_images"], arrays["train_labels"], arrays["test_labels"])


def load_tfds(name, data_dir=None):
    """Loads an image dataset through tensorflow-datasets (downloads if needed)."""
    import tensorflow_datasets as tfds

    print(f"Loading {name!r} through tensorflow-datasets (this downloads it the first time).")
    (train, test) = tfds.as_numpy(
        tfds.load(name, split=["train", "test"], batch_size=-1, as_supervised=True, data_dir=data_dir)
    )
    return from_arrays(train[0], test[0], train[1], test[1])


def load_dataset(name="fashion_mnist", data_dir=None):
    """Returns `Splits` for a dataset name.

    Fashion-MNIST: the IDX files in `data_dir`, $KVAE_DATA_DIR or Debian's folder;
    if none of those holds any of the files, tensorflow-datasets. A folder that
    holds some files but not all, or a bad file, is an error, not a fallback.
    Any other name goes to tensorflow-datasets.
    """
    if name != "fashion_mnist":
        return load_tfds(name)
    folder = resolve_data_dir(data_dir)
    present = [f for f in IDX_FILES.values() if os.path.exists(os.path.join(folder, f))]
    if present:
        return read_fashion_mnist_dir(folder)
    if data_dir or os.environ.get(DATA_DIR_ENV):
        raise DataError(f"No Fashion-MNIST IDX files in {folder}. {FETCH_HINT}")
    return load_tfds("fashion_mnist")
