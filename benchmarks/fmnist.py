"""Fashion-MNIST as NumPy uint8 arrays without TensorFlow (for the PyTorch side).

The same files and the same split as kvae.data.load_dataset: the first 50,000
training images train, the last 10,000 validate, the 10,000 test images test.
"""

import gzip
import os

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
VALIDATION_SIZE = 10_000


def _read(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir=None):
    """(x_train (50000, 28, 28, 1), x_test (10000, 28, 28, 1)), uint8."""
    folder = data_dir or os.environ.get("KVAE_DATA_DIR") or DEFAULT_DIR
    train = _read(os.path.join(folder, "train-images-idx3-ubyte.gz"))[..., None]
    test = _read(os.path.join(folder, "t10k-images-idx3-ubyte.gz"))[..., None]
    return train[: len(train) - VALIDATION_SIZE], test
