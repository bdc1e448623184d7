"""Reader for the IDX format of the original (Fashion-)MNIST files.

Format (big-endian): two zero bytes, a type code (0x08 = uint8), the number of
dimensions, one uint32 per dimension, then the data in C order.
"""

import gzip
import os
import zlib

import numpy as np

from kvae_contract.errors import DataError  # noqa: F401  (re-exported: kvae.data.DataError)

UBYTE = 0x08


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
