"""The original (Fashion-)MNIST files: the IDX reader and where Fashion-MNIST's four files are.

NumPy only, so that kvae.data (re-exports read_idx) and the PyTorch side of
the benchmarks (which must not import kvae, hence TensorFlow) read the same
files the same way. IDX format (big-endian): two zero bytes, a type code
(0x08 = uint8), the number of dimensions, one uint32 per dimension, then the
data in C order.
"""

import gzip
import os
import zlib

import numpy as np

from .errors import DataError

UBYTE = 0x08

# Fashion-MNIST as IDX files: Debian's dataset-fashion-mnist folder, or $KVAE_DATA_DIR, or --data-dir.
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DATA_DIR_ENV = "KVAE_DATA_DIR"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
VALIDATION_SIZE = 10_000  # the last 10,000 training images validate: 50k train / 10k validation, as in the literature


def resolve_data_dir(data_dir=None):
    """--data-dir, then $KVAE_DATA_DIR, then Debian's location."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


def read_idx(path, hint=""):
    """Reads a (gzipped) IDX file of unsigned bytes into a uint8 array.

    `hint` is appended to every error message and should say how to obtain a
    good copy of the file.
    """
    suffix = f" {hint}" if hint else ""
    if not os.path.exists(path):
        raise DataError(f"Data file not found: {path}.{suffix}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"Cannot read {path}: the file is corrupt or truncated ({e}).{suffix}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number).{suffix}")
    if raw[2] != UBYTE:
        raise DataError(f"{path} holds IDX type 0x{raw[2]:02x}; expected unsigned bytes (0x08).{suffix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header is incomplete.{suffix}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated or padded: header says shape {shape} "
            f"({expected} bytes) but the file has {len(raw)} bytes.{suffix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
